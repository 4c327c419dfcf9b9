"""The configured models as deployments, their groups, and how a call's target resolves."""

from __future__ import annotations

from dataclasses import dataclass

from convergiod.config import RouterConfig, RouterLocalConfig, RouterProviderConfig

__all__ = ["LOCAL", "Catalog", "Deployment"]

#: The name of the embedded model (and of its provider).
LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model on one provider: the unit of retries, cooldowns and prices."""

    name: str
    provider: str
    kind: str
    upstream: str
    context_window: int
    max_output_tokens: int
    input_price: float
    output_price: float
    tools: bool
    provider_config: RouterProviderConfig | None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6


def _local(config: RouterLocalConfig) -> Deployment:
    return Deployment(
        name=LOCAL,
        provider=LOCAL,
        kind="local",
        upstream="SmolLM2-135M-Instruct",
        context_window=config.context_window,
        max_output_tokens=config.max_output_tokens,
        input_price=0.0,
        output_price=0.0,
        tools=False,
        provider_config=None,
    )


class Catalog:
    """Resolves ``model or group`` to an ordered list of deployments."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.models: dict[str, Deployment] = {}
        if config.local.enabled:
            self.models[LOCAL] = _local(config.local)
        for name, m in config.models.items():
            provider = config.providers.get(m.provider)
            kind = provider.kind if provider is not None else "local"
            if kind == "local":
                # A model on a "local"-kind provider is the embedded engine under
                # another name and price.
                base = _local(config.local)
                self.models[name] = Deployment(
                    name=name,
                    provider=m.provider,
                    kind="local",
                    upstream=base.upstream,
                    context_window=min(m.context_window, base.context_window),
                    max_output_tokens=m.max_output_tokens,
                    input_price=m.input_price,
                    output_price=m.output_price,
                    tools=False,
                    provider_config=provider,
                )
                continue
            self.models[name] = Deployment(
                name=name,
                provider=m.provider,
                kind=kind,
                upstream=m.upstream or name,
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                input_price=m.input_price,
                output_price=m.output_price,
                tools=m.tools,
                provider_config=provider,
            )
        self.groups = {g: list(members) for g, members in config.groups.items()}
        self.default = config.default or self._implicit_default()

    def _implicit_default(self) -> str:
        if self.groups:
            return next(iter(self.groups))
        remote = [n for n, d in self.models.items() if d.kind != "local"]
        if remote:
            return remote[0]
        return LOCAL

    def target(self, model: str | None, agent: str | None) -> str:
        if model:
            return model
        if agent and agent in self.config.agents:
            return self.config.agents[agent]
        return self.default

    def resolve(self, target: str) -> tuple[list[Deployment], bool]:
        """(deployments in fallback order, whether ``target`` is a group). KeyError if
        unknown."""
        if target in self.groups:
            members = [self.models[m] for m in self.groups[target] if m in self.models]
            if not members:
                raise KeyError(target)
            return members, True
        return [self.models[target]], False

    def groups_of(self, name: str) -> list[str]:
        return [g for g, members in self.groups.items() if name in members]
