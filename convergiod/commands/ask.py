"""``convergio ask`` and ``convergio chat``: ask the team, watch it work, get one answer.

The daemon half (the task run in the request's own Trio task, checkpointed for ``convergio
task resume``) is ``convergiod.actors.orchestrator.serve``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json

COLOURS = ["cyan", "green", "yellow", "magenta", "blue", "red", "bright_cyan", "bright_green"]


class Renderer:
    """Prints a task's events as they come: text per agent in its own colour, tool calls,
    delegations and notices on their own lines; approval prompts at the terminal."""

    def __init__(self, as_json: bool, yes: bool = False) -> None:
        self.as_json = as_json
        self.yes = yes
        self.colours: dict[str, str] = {}
        self.current: str | None = None
        self.tty = sys.stdout.isatty()

    def colour(self, agent: str | None) -> str:
        key = agent or "?"
        if key not in self.colours:
            self.colours[key] = COLOURS[len(self.colours) % len(COLOURS)]
        return self.colours[key]

    def line(self, text: str, agent: str | None = None) -> None:
        if self.current is not None:
            click.echo()
            self.current = None
        click.secho(text, fg=self.colour(agent) if self.tty else None, dim=self.tty)

    def event(self, stream: Any, event: protocol.EventBody) -> None:
        if isinstance(event, protocol.ApprovalRequest):
            from convergiod.commands.tool import _decide

            if self.current is not None:
                click.echo()
                self.current = None
            stream.answer(event.approval, _decide(event, self.yes))
            return
        if self.as_json:
            print_json(event)
            return
        if isinstance(event, protocol.TokenDelta):
            if event.agent != self.current:
                if self.current is not None:
                    click.echo()
                click.secho(f"[{event.agent}] ", fg=self.colour(event.agent), bold=True, nl=False)
                self.current = event.agent
            click.secho(event.text, fg=self.colour(event.agent) if self.tty else None, nl=False)
        elif isinstance(event, protocol.DelegationStarted):
            self.line(f"→ {event.agent} delegates to {event.to}: {event.task}", event.agent)
        elif isinstance(event, protocol.DelegationFinished):
            state = "done" if event.ok else f"failed: {event.summary}"
            self.line(f"← {event.to} {state}", event.to)
        elif isinstance(event, protocol.ToolCallStarted):
            self.line(f"  {event.agent} runs {event.tool}", event.agent)
        elif isinstance(event, protocol.ToolCallFinished) and not event.ok:
            self.line(f"  {event.tool} failed: {event.summary}", event.agent)
        elif isinstance(event, protocol.Notice):
            self.line(f"note: {event.message}", event.agent)

    def answer(self, answer: protocol.Answer) -> None:
        if self.as_json:
            print_json(answer)
            return
        if self.current is not None:
            click.echo()
            self.current = None
        cost = sum(u.cost for u in answer.usage)
        tokens = sum(u.input_tokens + u.output_tokens for u in answer.usage)
        click.secho(
            f"\n— task {answer.task}, conversation {answer.conversation}: {answer.steps} steps, "
            f"{tokens} tokens, ${cost:.4f}",
            dim=True,
            err=True,
        )


def run_streamed(op: protocol.Op, renderer: Renderer) -> protocol.Answer:
    with client(10.0) as c:
        stream = c.stream(op, timeout=None)
        try:
            for event in stream:
                renderer.event(stream, event)
        except KeyboardInterrupt:
            stream.cancel()
            click.echo("\nconvergio: cancelled", err=True)
            raise SystemExit(130) from None
    answer = stream.result
    assert isinstance(answer, protocol.Answer)
    return answer


@click.command()
@click.argument("prompt", nargs=-1, required=True)
@click.option("--agent", default=None, help="Ask this agent instead of the chief of staff.")
@click.option("--conversation", default=None, help="Continue this conversation.")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, resolve_path=True),
    default=None,
    help="Directory the tools work in (default: the current directory).",
)
@click.option("--yes", is_flag=True, help="Approve every tool call of this run.")
@json_option
def cli(
    prompt: tuple[str, ...],
    agent: str | None,
    conversation: str | None,
    workspace: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Ask the team; watch the agents work; get one streamed answer."""
    op = protocol.Ask(
        prompt=" ".join(prompt),
        agent=agent,
        conversation=conversation,
        workspace=workspace or os.getcwd(),
    )
    renderer = Renderer(as_json, yes)
    answer = run_streamed(op, renderer)
    renderer.answer(answer)


@click.command()
@click.option("--agent", default=None, help="The agent to talk to (default: the chief of staff).")
@click.option("--conversation", default=None, help="Continue this conversation.")
@click.option("--workspace", type=click.Path(file_okay=False, resolve_path=True), default=None)
@json_option
def chat(agent: str | None, conversation: str | None, workspace: str | None, as_json: bool) -> None:
    """An interactive session: history is kept, `@agent ...` addresses one agent, Ctrl-C
    cancels the current answer, Ctrl-D (or /quit) leaves."""
    renderer = Renderer(as_json)
    while True:
        try:
            line = click.prompt("you", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo()
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        target = agent
        if line.startswith("@") and " " in line:
            target, line = line[1:].split(" ", 1)
        op = protocol.Ask(
            prompt=line, agent=target, conversation=conversation, workspace=workspace or os.getcwd()
        )
        try:
            answer = run_streamed(op, renderer)
        except SystemExit:
            continue
        conversation = answer.conversation
        renderer.answer(answer)
