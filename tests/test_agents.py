"""Agent definitions: the shipped team, overrides by name, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

from convergiod.actors.orchestrator.agents import SHIPPED_DIR, AgentSet, load

GOOD = """+++
name = "{name}"
description = "does things"
tools = ["fs.read"]
+++
You are {name}.
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    path.write_text(text)
    return path


def test_shipped_team_is_ali_and_at_least_six_specialists() -> None:
    team = load([SHIPPED_DIR])
    assert team.errors == ()
    ali = team.agents["ali"]
    assert "delegate" in ali.tools
    specialists = [a for a in team.agents.values() if a.name != "ali"]
    assert len(specialists) >= 6
    assert set(ali.delegates) == {a.name for a in specialists}
    for agent in specialists:
        assert agent.prompt and agent.description and agent.tools
        assert "delegate" not in agent.tools and not agent.delegates


def test_user_file_overrides_shipped_agent_by_name_and_adds_new_ones(tmp_path: Path) -> None:
    write(tmp_path, "coder", GOOD.format(name="coder"))
    write(tmp_path, "poet", GOOD.format(name="poet"))
    team = load([SHIPPED_DIR, tmp_path])
    assert team.agents["coder"].prompt == "You are coder."
    assert team.agents["coder"].source == tmp_path / "coder.md"
    assert "poet" in team.agents and "ali" in team.agents


def test_invalid_files_are_reported_by_file_and_key_and_the_rest_load(tmp_path: Path) -> None:
    write(tmp_path, "a", GOOD.format(name="a").replace("tools", "toolz"))
    write(tmp_path, "b", GOOD.format(name="b").replace('name = "b"', 'name = "B C"'))
    write(tmp_path, "c", "no front matter at all")
    write(tmp_path, "d", GOOD.format(name="d") + "\n").write_text(
        GOOD.format(name="d").replace("+++\nYou are d.\n", "+++\n")
    )
    write(
        tmp_path,
        "e",
        GOOD.format(name="e").replace('["fs.read"]', '["fs.read"]\n[limits]\nmax_steps = 0'),
    )
    write(tmp_path, "f", GOOD.format(name="f").replace("+++\nYou", 'delegates = ["f"]\n+++\nYou'))
    write(tmp_path, "g", "+++\nname = = 1\n+++\nbody\n")
    write(tmp_path, "ok", GOOD.format(name="ok"))
    team: AgentSet = load([tmp_path])
    assert list(team.agents) == ["ok"]
    errors = "\n".join(team.errors)
    assert "a.md: unknown key 'toolz'" in errors
    assert "b.md: key 'name'" in errors
    assert "c.md: no TOML front matter" in errors
    assert "d.md: the system prompt" in errors
    assert "e.md: key 'limits.max_steps'" in errors
    assert "f.md: key 'delegates': an agent cannot delegate to itself" in errors
    assert "g.md: front matter is not valid TOML" in errors


def test_unknown_delegation_targets_are_reported_and_dropped(tmp_path: Path) -> None:
    write(
        tmp_path,
        "boss",
        GOOD.format(name="boss").replace("+++\nYou", 'delegates = ["ok", "ghost"]\n+++\nYou'),
    )
    write(tmp_path, "ok", GOOD.format(name="ok"))
    team = load([tmp_path])
    assert team.agents["boss"].delegates == ("ok",)
    assert any("unknown agents ['ghost']" in e for e in team.errors)
