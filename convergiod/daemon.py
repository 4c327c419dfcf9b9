"""The daemon's lifecycle: lock, sockets, the actor tree, the gateway, signals, shutdown.

Start-up order: take the lock (one daemon per home), bind ``PUB``, start the supervision tree
in spec order, then bind the ``ROUTER``: a client that can connect finds every actor running.
SIGTERM/SIGINT (or the ``daemon.shutdown`` op) stop new requests, let in-flight ones finish
within ``gateway.drain_timeout``, stop the tree in reverse order and exit 0.

Under systemd the daemon reports each step over ``$NOTIFY_SOCKET`` (``convergiod.service``):
``READY=1`` once the ROUTER is bound, ``WATCHDOG=1`` while healthy, ``RELOADING=1`` then
``READY=1`` around a reload (SIGHUP or the ``daemon.reload`` op), ``STOPPING=1`` at shutdown.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import time
from collections import deque
from typing import Any

import trio
import zmq

from convergiod import __version__, protocol
from convergiod.config import Config
from convergiod.errors import OpError
from convergiod.gateway import Gateway, Handler, InlineHandler, ipc_router_options
from convergiod.lock import DaemonLock
from convergiod.paths import Paths
from convergiod.runtime import (
    NOT_NOW,
    ActorCrashed,
    ActorNotFound,
    ActorStopped,
    ActorSystem,
    AskTimeout,
    ChildSpec,
    MailboxFull,
    Restart,
    Strategy,
    SupervisorSpec,
    open_actor_system,
)
from convergiod.security.door import TcpDoor
from convergiod.security.registry import Registry, registry_path
from convergiod.service import reload as reloading
from convergiod.service.notify import Notifier
from convergiod.service.watchdog import health_problem, run_watchdog
from convergiod.services import service_specs
from convergiod.zmqtrio import TrioSocket, open_socket

log = logging.getLogger("convergiod.daemon")

HEALTH_INTERVAL = 1.0
RUNTIME_ERRORS = (ActorCrashed, ActorNotFound, ActorStopped, AskTimeout, MailboxFull)


class Daemon:
    """State shared by the op handlers of one daemon process."""

    def __init__(self, paths: Paths, config: Config, notifier: Notifier | None = None) -> None:
        self.paths = paths
        self.config = config
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.started_at = time.time()
        self.shutdown_requested = trio.Event()
        self.system: ActorSystem | None = None
        self.gateway: Gateway | None = None
        self.loop_lag = 0.0
        self.last_probe_ok = trio.current_time()
        self.events_dropped = 0
        self._early_events: deque[protocol.PubEvent] = deque(maxlen=1000)
        self._reload_lock = trio.Lock()
        self._reload_requested = trio.Event()
        #: Tenants and paired clients (``convergiod.security``); changes hold ``access_lock``.
        self.registry: Registry | None = None
        self.access_lock = trio.Lock()
        #: The CURVE ``tcp://`` door, when ``gateway.tcp`` is set.
        self.tcp: TcpDoor | None = None

    # ------------------------------------------------------------------ the actor tree

    def tree(self, pub: TrioSocket) -> SupervisorSpec:
        """The supervision tree. Later actors (memory, router, tool, plugin, orchestrator)
        join it under their own supervisors."""
        from convergiod.actors.events import EventsActor
        from convergiod.actors.health import HealthActor
        from convergiod.actors.system import SystemActor

        sup = self.config.supervisor
        core = SupervisorSpec(
            name="core",
            strategy=Strategy(sup.strategy),
            intensity=sup.intensity,
            period=sup.period,
            children=[
                ChildSpec(name="events", start=lambda: EventsActor(pub), shutdown=sup.shutdown),
                ChildSpec(name="health", start=HealthActor, shutdown=sup.shutdown),
                ChildSpec(
                    name="system",
                    start=lambda: SystemActor(
                        started_at=self.started_at,
                        home=str(self.paths.home or self.paths.data_dir),
                        gateway_stats=self.gateway_stats,
                        health=lambda: (self.healthy, self.loop_lag),
                    ),
                    shutdown=sup.shutdown,
                ),
            ],
        )
        children = [
            # A supervisor's shutdown must cover its children's (OTP uses infinity).
            ChildSpec(
                name="core",
                start=core,
                restart=Restart.PERMANENT,
                shutdown=sup.shutdown * len(core.children) + 1.0,
            )
        ]
        service_children = service_specs(self)
        if service_children:
            services = SupervisorSpec(
                name="services",
                strategy=Strategy.ONE_FOR_ONE,
                intensity=sup.intensity,
                period=sup.period,
                children=service_children,
            )
            children.append(
                ChildSpec(
                    name="services",
                    start=services,
                    shutdown=sum(c.shutdown for c in service_children) + 1.0,
                )
            )
        return SupervisorSpec(
            name="root",
            strategy=Strategy.ONE_FOR_ONE,
            intensity=3,
            period=30.0,
            children=children,
        )

    def gateway_stats(self) -> protocol.GatewayStats:
        gw = self.gateway
        return protocol.GatewayStats(
            endpoint=self.paths.api_endpoint,
            events_endpoint=self.paths.events_endpoint,
            in_flight=gw.in_flight if gw else 0,
            requests=gw.counters.requests if gw else 0,
            failures=gw.counters.failures if gw else 0,
        )

    # ------------------------------------------------------------------ events

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Never raises: an event that cannot be queued is counted and dropped."""
        event = protocol.PubEvent(topic=topic, time=time.time(), data=data)
        if self.system is None:
            self._early_events.append(event)
            return
        try:
            events = self.system.ref("events")
            # Published on this task when the actor has nothing queued or in progress
            # (order kept, no mailbox trip); otherwise queued behind the others.
            if not (events.idle() and events.ask_now(event) is not NOT_NOW):
                events.send(event)
        except RUNTIME_ERRORS:
            self.events_dropped += 1

    def _flush_early_events(self) -> None:
        while self._early_events:
            event = self._early_events.popleft()
            self.publish(event.topic, event.data)

    # ------------------------------------------------------------------ health

    async def health_loop(self) -> None:
        """Measure event-loop lag and probe the tree once a second."""
        from convergiod.actors.health import Probe

        while True:
            before = trio.current_time()
            await trio.sleep(HEALTH_INTERVAL)
            self.loop_lag = max(0.0, trio.current_time() - before - HEALTH_INTERVAL)
            if self.system is None:
                continue
            try:
                await self.system.ref("health").ask(Probe(sent_at=trio.current_time()), timeout=2.0)
            except RUNTIME_ERRORS as exc:
                log.warning("health probe failed: %s", exc)
            else:
                self.last_probe_ok = trio.current_time()

    @property
    def healthy(self) -> bool:
        return self.health_problem() is None

    def health_problem(self) -> str | None:
        """None while the tree is alive and probes come back; else what is wrong."""
        if self.system is None:
            return "the actor tree is not running"
        # The root is "failed" from the moment it gives up, before its children have stopped.
        root = self.system.info()[0]
        return health_problem(
            tree_alive=self.system.healthy and root.state == "running",
            last_probe_ok=self.last_probe_ok,
            now=trio.current_time(),
            probe_interval=HEALTH_INTERVAL,
        )

    def serving_status(self) -> str:
        """The ``STATUS=`` line while all is well."""
        infos = self.system.info() if self.system is not None else []
        actors = [a for a in infos if a.kind == "actor"]
        running = sum(1 for a in actors if a.state == "running")
        return f"serving on {self.paths.api_endpoint}; {running}/{len(actors)} actors running"

    # ------------------------------------------------------------------ reload

    async def reload(self) -> protocol.ReloadReply:
        """Re-read ``config.toml`` and hand it to the gateway, the logger and every reloadable
        actor (``convergiod.service.reload``), without touching connections or in-flight
        requests. A bad file is refused with ``OpError(bad_request)`` naming the key, and the
        old configuration stays in force. One reload at a time."""
        from convergiod import config as config_module

        async with self._reload_lock:
            if self.shutdown_requested.is_set():
                raise OpError("unavailable", "the daemon is shutting down")
            self.notifier.reloading("reloading the configuration")
            outcome = "reload interrupted"
            try:
                try:
                    new = config_module.load(self.paths.config_file)
                except config_module.ConfigError as exc:
                    raise OpError("bad_request", f"reload refused: {exc}") from None
                old = self.config
                names = reloading.reloadable_actors(self.system) if self.system else []
                if self.system is not None:
                    await reloading.check(self.system, names, new, old)
                # From here on the new configuration is in force: a cancelled request must not
                # leave half the actors on the old one (each ask has its own timeout).
                with trio.CancelScope(shield=True):
                    reply = await self._apply(old, new, names)
                outcome = "configuration reloaded"
                return reply
            except OpError as exc:
                outcome = f"{exc.message}; the previous configuration stays in force"
                log.error("%s", outcome)
                raise
            finally:
                if not self.shutdown_requested.is_set():  # never READY after STOPPING
                    self.notifier.ready(f"{self.serving_status()}; {outcome}")

    async def _apply(self, old: Config, new: Config, names: list[str]) -> protocol.ReloadReply:
        from convergiod import logs

        changed = reloading.changed_keys(old, new)
        self.config = new
        if self.gateway is not None:
            self.gateway.config = new.gateway
        if self.tcp is not None:
            self.tcp.config = new.gateway
            if self.tcp.gateway is not None:
                self.tcp.gateway.config = new.gateway
        if new.log != old.log:
            logs.setup(new.log.level, new.log.format)
        done: list[str] = []
        failed: list[str] = []
        if self.system is not None:
            done, failed = await reloading.apply(self.system, names, new, old)
        later = reloading.needs_restart(changed)
        log.info(
            "configuration reloaded: %s",
            ", ".join(changed) or "no setting changed",
            extra={"restart_needed": later or None, "failed": failed or None},
        )
        self.publish("daemon.reloaded", {"changed": changed, "failed": failed})
        return protocol.ReloadReply(
            changed=changed, restart_needed=later, actors=done, failed=failed
        )

    def request_reload(self) -> None:
        """For the SIGHUP handler: ``reload_loop`` picks it up (several signals coalesce)."""
        self._reload_requested.set()

    async def reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested = trio.Event()
            with contextlib.suppress(OpError):  # already logged; SIGHUP has no one to answer
                await self.reload()


def handlers(daemon: Daemon) -> dict[type, Handler]:
    from convergiod.commands import registry

    return {op: functools.partial(fn, daemon) for op, fn in registry().items()}


def inline_handlers(daemon: Daemon) -> dict[type, InlineHandler]:
    from convergiod.commands import inline_registry

    return {op: functools.partial(fn, daemon) for op, fn in inline_registry().items()}


#: Allocations (net of frees) between two young-generation collections. A request in
#: flight holds about a thousand objects the collector tracks (coroutines, frames,
#: messages), so 100 in flight hold some 100,000; as they finish, reference counting frees
#: them and the count goes back down. Under that threshold (Python's default is 700; 10,000
#: before) collections came while requests were in flight, each walking what they hold:
#: about 2 ms each, 23 µs per request at 100 concurrent asks (measured with gc.callbacks).
#: At 100,000 none comes then. Garbage in reference cycles, which only the collector frees,
#: waits longer: young, for at most that many allocations (a few MB); older cycles for the
#: older generations' collections, 10 and 100 times rarer.
GC_THRESHOLD = (100_000, 10, 10)


def _tune_gc() -> None:
    """Once started: everything built so far (modules, actors, configuration, compiled
    regexes) lives as long as the daemon, so it is moved out of the collector's sight
    (``gc.freeze``), and young collections run less often. Full collections then walk only
    what requests created since, instead of tens of milliseconds of startup objects that
    landed in the slowest requests' latency. An actor instance that ends gives them back to
    the collector (``gc.unfreeze`` in the runtime): a crashed instance from start-up must
    not live forever."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def serve(daemon: Daemon) -> None:
    paths, config = daemon.paths, daemon.config
    daemon.registry = Registry(registry_path(paths.data_dir))
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        async with (
            open_socket(ctx, zmq.PUB) as pub,
            open_socket(ctx, zmq.ROUTER) as router,
            trio.open_nursery() as nursery,
        ):
            pub.zmq.setsockopt(zmq.LINGER, 0)
            pub.zmq.setsockopt(zmq.SNDHWM, 10_000)
            pub.zmq.bind(paths.events_endpoint)
            async with open_actor_system(daemon.tree(pub), on_event=daemon.publish) as system:
                daemon.system = system
                daemon._flush_early_events()
                ipc_router_options(router.zmq, config.gateway.max_frame_bytes)
                gateway = Gateway(
                    config.gateway,
                    router,
                    handlers(daemon),
                    inline=inline_handlers(daemon),
                    endpoint=paths.api_endpoint,
                    events_endpoint=paths.events_endpoint,
                    pid=os.getpid(),
                    version=__version__,
                )
                daemon.gateway = gateway
                with trio.CancelScope() as gateway_scope:
                    nursery.start_soon(_watch_signals, daemon)
                    nursery.start_soon(daemon.health_loop)
                    nursery.start_soon(daemon.reload_loop)
                    await nursery.start(gateway.serve)
                    router.zmq.bind(paths.api_endpoint)
                    os.chmod(paths.api_socket, 0o600)
                    os.chmod(paths.events_socket, 0o600)
                    if config.gateway.tcp:
                        daemon.tcp = _tcp_door(daemon)
                        await nursery.start(daemon.tcp.serve, ctx)
                    log.info(
                        "convergiod %s ready on %s (pid %d)",
                        __version__,
                        paths.api_endpoint,
                        os.getpid(),
                    )
                    daemon.publish("daemon.ready", {"pid": os.getpid()})
                    _tune_gc()
                    notifier = daemon.notifier
                    notifier.ready(daemon.serving_status())
                    if notifier.watchdog_interval is not None:
                        nursery.start_soon(
                            functools.partial(
                                run_watchdog,
                                notifier,
                                notifier.watchdog_interval,
                                daemon.health_problem,
                                healthy_status=daemon.serving_status,
                            )
                        )
                    await daemon.shutdown_requested.wait()
                    log.info("shutting down: draining %d in-flight requests", gateway.in_flight)
                    notifier.stopping(f"stopping: draining {gateway.in_flight} requests")
                    doors = [gateway]
                    if daemon.tcp is not None and daemon.tcp.gateway is not None:
                        doors.append(daemon.tcp.gateway)
                    async with trio.open_nursery() as drains:
                        for door in doors:
                            door.stop_accepting()
                            drains.start_soon(door.drain, config.gateway.drain_timeout)
                    gateway_scope.cancel()
                nursery.cancel_scope.cancel()
            daemon.system = None
    finally:
        ctx.term()


def _tcp_door(daemon: Daemon) -> TcpDoor:
    from convergiod.security.keys import ServerKeys, server_key_path

    assert daemon.registry is not None
    return TcpDoor(
        config=daemon.config.gateway,
        registry=daemon.registry,
        server_keys=ServerKeys(server_key_path(daemon.paths.data_dir)).load_or_create(),
        handlers=handlers(daemon),
        pid=os.getpid(),
        version=__version__,
        events_endpoint="",
    )


async def _watch_signals(daemon: Daemon) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                daemon.request_reload()
            else:
                daemon.shutdown_requested.set()


def run(paths: Paths, config: Config) -> int:
    """Run the daemon in the foreground until it is told to stop. Returns the exit code."""
    paths.prepare_runtime_dir()
    lock = DaemonLock(paths.lock_file, paths.pid_file)
    lock.acquire()
    try:
        for stale in (paths.api_socket, paths.events_socket):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        notifier = Notifier.from_env(os.environ, unset=True)
        notifier.status("starting: actors and sockets")
        try:
            trio.run(_main, paths, config, notifier)
        finally:
            notifier.close()
        log.info("convergiod stopped")
        return 0
    finally:
        for sock in (paths.api_socket, paths.events_socket):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
        lock.release()


async def _main(paths: Paths, config: Config, notifier: Notifier) -> None:
    await serve(Daemon(paths, config, notifier))
