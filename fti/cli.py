"""The ``fti`` command: one entry point for the agent, the hub, keys and the demo.

Only this module configures logging handlers; every library module just logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.service import RunReport

log = logging.getLogger("fti")


def _version() -> str:
    try:
        return version("fti")
    except PackageNotFoundError:
        return "unknown"


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _agent_run(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config
    from agent.service import Agent

    if not args.once:
        return _agent_follow(args)
    config = load_agent_config(Path(args.config))
    agent = Agent(config)
    try:
        report = agent.run_once(poll=not args.no_poll)
    finally:
        agent.close()
    statuses = {}
    for status in report.rounds.values():
        statuses[status] = statuses.get(status, 0) + 1
    print(json.dumps({
        "site": report.site_id,
        "connections": report.connections,
        "windows": report.windows,
        "rounds": statuses,
        "delivered": report.delivered,
        "pending": report.pending,
        "alerts": report.alerts,
        "epsilon_spent": round(report.epsilon_spent, 4),
        "epsilon_budget": report.epsilon_budget,
    }, sort_keys=True))
    unreadable = _unreadable_input(report)
    if unreadable:
        print(f"fti agent run: {unreadable}", file=sys.stderr)
        return 4
    return 0 if report.pending == 0 else 3


def _unreadable_input(report: RunReport) -> str:
    """Say why a replay read nothing usable, or return "" when some line could be read.

    Lines were read and every one was malformed: most often a source given the wrong type,
    or a file that is not a log at all. The run still counted and quarantined them.
    """
    parse_stats, event_stats = report.parse_stats, report.event_stats
    reasons: dict[str, int] = {}
    read = 0
    if parse_stats is not None:
        read += parse_stats.records
        for reason, count in parse_stats.malformed.items():
            reasons[reason] = reasons.get(reason, 0) + count
    if event_stats is not None:
        read += sum(event_stats.events.values()) + event_stats.skipped
        for reason, count in event_stats.errors.items():
            reasons[reason] = reasons.get(reason, 0) + count
    if read or not reasons:
        return ""
    listed = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda item: -item[1]))
    return (f"none of the {sum(reasons.values())} lines read could be parsed ({listed}); nothing came from them. "
            "Check each source's type in the configuration, and try `fti agent parse --source-type TYPE FILE`.")


def _agent_follow(args: argparse.Namespace) -> int:
    """Follow the configured logs until SIGTERM or SIGINT, reloading on SIGHUP (agent.daemon)."""
    import os

    from agent.config import load_agent_config
    from agent.daemon import AgentService
    from fti.sd_notify import SystemdNotifier

    config_path = Path(args.config)
    config = load_agent_config(config_path)
    return AgentService(config_path, config, notifier=SystemdNotifier(os.environ), start_at=args.start_at).run()


def _agent_parse(args: argparse.Namespace) -> int:
    from agent.parse_command import run_parse

    try:
        return run_parse(args.source_type, [Path(name) for name in args.files], out=sys.stdout, err=sys.stderr,
                         time_zone=args.timezone,
                         quarantine_path=Path(args.quarantine) if args.quarantine else None)
    except ValueError as err:
        print(f"fti agent parse: {err}", file=sys.stderr)
        return 2


def _parse_utc_time(text: str) -> datetime:
    """Parse an ISO 8601 time with a UTC offset, for ``--at``."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid ISO 8601 time {text!r}; use e.g. 2024-06-03T01:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time {text!r} has no UTC offset; add Z or +00:00")
    return moment


def _agent_budget(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from agent.config import load_agent_config
    from privacy.errors import BudgetExhausted
    from privacy.ledger import PrivacyLedger

    config = load_agent_config(Path(args.config))
    privacy = config.privacy
    ledger = PrivacyLedger(
        config.state_dir / "privacy-ledger.sqlite", site_id=config.site.id, budget_epsilon=privacy.budget_epsilon,
        budget_delta=privacy.budget_delta, period_seconds=privacy.period_days * 86400,
    )
    at = args.at or datetime.now(timezone.utc)
    status = ledger.spent(at)
    # "exhausted" means the whole budget is spent. The agent stops earlier, as soon as one more
    # round's epsilon does not fit, so the output also reports whether the next round fits.
    round_seconds = config.windows.round_seconds
    next_round = (int(at.timestamp()) // round_seconds + 1) * round_seconds
    try:
        ledger.check(next_round, privacy.epsilon_per_round, privacy.delta_per_round)
        next_round_fits, next_fit_at = True, None
    except BudgetExhausted as err:
        next_round_fits, next_fit_at = False, err.retry_at
    print(json.dumps({
        "site": config.site.id,
        "at": at.isoformat(),
        "epsilon_spent": status.epsilon_spent,
        "epsilon_budget": status.epsilon_budget,
        "delta_spent": status.delta_spent,
        "delta_budget": status.delta_budget,
        "rounds_charged": status.rounds_charged,
        "exhausted": status.exhausted,
        "next_round_start": datetime.fromtimestamp(next_round, timezone.utc).isoformat(),
        "next_round_fits": next_round_fits,
        "next_round_fits_from": next_fit_at.isoformat() if next_fit_at else None,
    }, sort_keys=True))
    return 0


def _hub_serve(args: argparse.Namespace) -> int:
    from fusion_hub.cli import serve

    return serve(Path(args.config), log_level=args.log_level or "info")


def _hub_enroll(args: argparse.Namespace) -> int:
    from fusion_hub.cli import enroll

    password = enroll(Path(args.config), args.site, args.public_key)
    print(f"site {args.site} enrolled; its hub password (shown once): {password}")
    return 0


def _hub_add_consumer(args: argparse.Namespace) -> int:
    from fusion_hub.cli import add_consumer

    password = add_consumer(Path(args.config), args.name, args.read)
    print(f"consumer {args.name} added with read access to {', '.join(args.read)}; "
          f"its hub password (shown once): {password}")
    return 0


def _hub_revoke(args: argparse.Namespace) -> int:
    from fusion_hub.cli import revoke

    revoke(Path(args.config), args.name)
    print(f"{args.name} revoked; the hub rejects its next request")
    return 0


def _hub_sites(args: argparse.Namespace) -> int:
    from fusion_hub.cli import format_sites

    print(format_sites(Path(args.config)))
    return 0


def _hub_rounds(args: argparse.Namespace) -> int:
    from fusion_hub.cli import format_rounds

    print(format_rounds(Path(args.config), limit=args.limit))
    return 0


def _hub_token(args: argparse.Namespace) -> int:
    from fusion_hub.cli import issue_token, revoke_token

    if args.revoke:
        revoke_token(Path(args.config), args.revoke)
        print(f"API token {args.revoke} revoked; the hub rejects its next request")
        return 0
    token = issue_token(Path(args.config), args.name)
    print(f"API token for {args.name} (send as 'Authorization: Bearer <token>'; shown once): {token}")
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from privacy.signing import generate_signing_key

    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"fti keys generate: {out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    key = generate_signing_key()
    key.to_file(out, overwrite=args.force)
    print(key.public_key_b64)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from fti.check_config import ConfigKindUnknown, check_config_file

    status = 0
    for name in args.files:
        try:
            result = check_config_file(Path(name), kind=args.kind)
        except ConfigKindUnknown as err:
            print(f"fti check-config: {err}", file=sys.stderr)
            return 2
        if result.ok:
            print(f"{name}: valid {result.kind} configuration")
        else:
            print(f"fti check-config: {result.problem}", file=sys.stderr)
            status = 1
    return status


def _demo(args: argparse.Namespace) -> int:
    from fti.demo import run_demo

    return run_demo(out_dir=Path(args.out), data_dir=Path(args.data_dir) if args.data_dir else None,
                    secure=args.secure)


def _eval(args: argparse.Namespace) -> int:
    from evaluation.report import write_report
    from evaluation.scenario import EvalSettings, run_scenario

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"fti eval: data folder {data_dir} not found; pass --data-dir", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"fti eval: invalid --seed {args.seed}; use an integer of 0 or more", file=sys.stderr)
        return 2
    # Create the output folder before the run, so that an unusable --out fails in seconds
    # instead of discarding a finished run.
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"fti eval: cannot create the output folder {out_dir}: {err}; pass another --out",
              file=sys.stderr)
        return 2
    settings = EvalSettings(seed=args.seed, strategy=args.strategy)
    # SIGTERM would end the process without unwinding, which leaves the run's temporary
    # folders (site data, hub database) behind. SystemExit unwinds and removes them.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        results = run_scenario(args.scenario, data_dir=data_dir, settings=settings, quick=args.quick)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for path in write_report(results, out_dir):
        print(path)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _siem_sync(args: argparse.Namespace) -> int:
    import os

    from siem_integrations.sync_command import run_sync

    return run_sync(args, env=os.environ)


LOG_LEVELS = ["debug", "info", "warning", "error"]
LOG_LEVEL_HELP = "logging level (default: info for services, warning for the demo)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fti", description="Federated threat intelligence with "
                                     "differentially private anomaly fusion.")
    parser.add_argument("--version", action="version", version=f"fti {_version()}")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS, help=LOG_LEVEL_HELP)
    # Every command also takes --log-level after its name. SUPPRESS keeps a value given before the
    # name when the command's own option is absent.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help=LOG_LEVEL_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    agent = commands.add_parser("agent", help="run the site agent").add_subparsers(dest="agent_command", required=True)
    run = agent.add_parser("run", parents=[common], help="follow the configured logs live, or replay them with "
                           "--once, and send round summaries")
    run.add_argument("--config", required=True, help="agent configuration file (YAML)")
    run.add_argument("--once", action="store_true", help="process the files to their end, send, and exit")
    run.add_argument("--no-poll", action="store_true", help="do not poll fused indicators after sending")
    run.add_argument("--start-at", default=None, choices=["beginning", "end"],
                     help="without --once: where to start files found at the first start (default: live.start_at "
                     "in the configuration, itself beginning by default)")
    run.set_defaults(handler=_agent_run, default_level="info")
    budget = agent.add_parser("budget", parents=[common], help="show the privacy budget spent in the current period")
    budget.add_argument("--config", required=True, help="agent configuration file (YAML)")
    budget.add_argument("--at", type=_parse_utc_time,
                        help="evaluate the period ending at this ISO 8601 time with a UTC offset, "
                             "e.g. 2024-06-03T01:00:00Z (default: now)")
    budget.set_defaults(handler=_agent_budget, default_level="warning")
    parse = agent.add_parser("parse", parents=[common], help="print the events fti reads from log files, as JSON "
                             "lines, with counts on stderr")
    parse.add_argument("--source-type", required=True, choices=["zeek", "sshd", "suricata", "sysmon"],
                       help="how to read the files")
    parse.add_argument("--timezone", default="UTC",
                       help="IANA time zone of syslog timestamps without a zone (default: UTC)")
    parse.add_argument("--quarantine", default=None, help="JSON-lines file that keeps the raw rejected lines")
    parse.add_argument("files", nargs="+", help="log files (plain or gzip)")
    parse.set_defaults(handler=_agent_parse, default_level="warning")

    hub = commands.add_parser("hub", help="run and manage the fusion hub").add_subparsers(dest="hub_command",
                                                                                           required=True)
    serve = hub.add_parser("serve", parents=[common], help="serve TAXII 2.1 and fuse rounds")
    serve.add_argument("--config", required=True, help="hub configuration file (YAML)")
    serve.set_defaults(handler=_hub_serve, default_level="info")
    enroll = hub.add_parser("enroll", parents=[common], help="register a site and print its credential once")
    enroll.add_argument("--config", required=True, help="hub configuration file (YAML)")
    enroll.add_argument("--site", required=True, help="the site's pseudonym, for example site-a")
    enroll.add_argument("--public-key", required=True, help="the site's Ed25519 public key (base64)")
    enroll.set_defaults(handler=_hub_enroll, default_level="warning")
    consumer = hub.add_parser("add-consumer", parents=[common],
                              help="add a read-only TAXII consumer and print its credential once")
    consumer.add_argument("--config", required=True, help="hub configuration file (YAML)")
    consumer.add_argument("--name", required=True, help="the consumer's user name, for example splunk-es")
    consumer.add_argument("--read", nargs="+", default=["fused-indicators"],
                          help="collections it may read (default: fused-indicators)")
    consumer.set_defaults(handler=_hub_add_consumer, default_level="warning")
    revoke = hub.add_parser("revoke", parents=[common], help="revoke a site or consumer at once")
    revoke.add_argument("--config", required=True, help="hub configuration file (YAML)")
    revoke.add_argument("--name", required=True, help="the site id or consumer name")
    revoke.set_defaults(handler=_hub_revoke, default_level="warning")
    sites = hub.add_parser("sites", parents=[common], help="list sites and consumers with their state and trust")
    sites.add_argument("--config", required=True, help="hub configuration file (YAML)")
    sites.set_defaults(handler=_hub_sites, default_level="warning")
    rounds = hub.add_parser("rounds", parents=[common], help="list recent rounds, newest first, with their outcome")
    rounds.add_argument("--config", required=True, help="hub configuration file (YAML)")
    rounds.add_argument("--limit", type=int, default=20, help="how many rounds to list (default: 20)")
    rounds.set_defaults(handler=_hub_rounds, default_level="warning")
    token = hub.add_parser("token", parents=[common], help="issue an API token for a site or consumer, or revoke one")
    token.add_argument("--config", required=True, help="hub configuration file (YAML)")
    token_action = token.add_mutually_exclusive_group(required=True)
    token_action.add_argument("--name", help="site id or consumer name that gets a new token")
    token_action.add_argument("--revoke", metavar="TOKEN_ID", help="id of the token to revoke (after 'fti_')")
    token.set_defaults(handler=_hub_token, default_level="warning")

    keys = commands.add_parser("keys", help="manage signing keys").add_subparsers(dest="keys_command", required=True)
    generate = keys.add_parser("generate", parents=[common], help="create a site signing key and print its public key")
    generate.add_argument("--out", required=True, help="where to write the private key (mode 0600)")
    generate.add_argument("--force", action="store_true", help="replace an existing key file")
    generate.set_defaults(handler=_keys_generate, default_level="warning")

    check = commands.add_parser("check-config", parents=[common],
                                help="check agent or hub configuration files without starting anything")
    check.add_argument("files", nargs="+", metavar="FILE", help="configuration file (YAML)")
    check.add_argument("--kind", choices=["agent", "hub"], default=None,
                       help="the kind of configuration (default: detected from the top-level keys)")
    check.set_defaults(handler=_check_config, default_level="warning")

    demo = commands.add_parser("demo", parents=[common], help="run a hub and five sites on the bundled real captures")
    demo.add_argument("--out", default="demo-out", help="folder for the outputs (default: demo-out)")
    demo.add_argument("--data-dir", default=None, help="folder with the captures (default: the bundled ones)")
    demo.add_argument("--secure", action="store_true",
                      help="run the sites in secure mode: the hub learns only sums across sites")
    demo.set_defaults(handler=_demo, default_level="warning")

    evaluate = commands.add_parser("eval", parents=[common], help="compare local, FedAvg, fusion and pooled detection "
                                   "on real labelled data")
    evaluate.add_argument("--scenario", required=True, choices=["iot23", "iot23-shift", "cicids2017", "nsl-kdd",
                                                             "nsl-kdd-shift"],
                          help="the sites and data")
    evaluate.add_argument("--out", required=True, help="folder for results.json, results.md and PNGs")
    evaluate.add_argument("--quick", action="store_true",
                          help="the five main approaches and the run without the poisoning site "
                               "only, without strategy, other ablation and epsilon variants")
    evaluate.add_argument("--data-dir", default="../shared/data",
                          help="folder with the labelled datasets (default: ../shared/data)")
    evaluate.add_argument("--strategy", default="noisy-or",
                          choices=["noisy-or", "capped-noisy-or", "median", "trimmed-mean",
                                   "corroboration", "ensemble"],
                          help="fusion strategy of the fusion approaches (default: noisy-or)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    evaluate.set_defaults(handler=_eval, default_level="warning")
    siem = commands.add_parser("siem", help="deliver indicators to Splunk or Elasticsearch")
    siem_commands = siem.add_subparsers(dest="siem_command", required=True)
    sync = siem_commands.add_parser("sync", parents=[common], help="poll a TAXII 2.1 collection into a SIEM")
    from siem_integrations.sync_command import add_sync_arguments

    add_sync_arguments(sync)
    sync.set_defaults(handler=_siem_sync, default_level="info")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level or args.default_level)
    from agent.errors import AgentError
    from fusion_hub.errors import HubError
    from privacy.errors import PrivacyError
    from siem_integrations.errors import SiemError

    try:
        return args.handler(args)
    except (AgentError, HubError, PrivacyError, SiemError) as err:
        print(f"fti: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"fti: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
