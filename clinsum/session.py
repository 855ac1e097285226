"""The full client: a menu for working through many patients, or one batch run.

Interactive use repeats any step in any order on one connection. The batch mode
(`--query`/`--patients`) is for scripts: a progress bar on the terminal, an exit status that
says whether everything was saved, and with `--json` one machine-readable document on stdout
while everything meant for people goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from .client import Client, ClientError, RPCError, ServerUnreachable, add_connection_args
from .terminal.live import BatchProgress
from .terminal.screen import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Interrupted, Screen
from .terminal.steps import ask_patient, ask_search, connect, generate, offer_save, save

CLIENT_NAME = "clinsum-session"
MENU = (
    ("1", "search", "Search for patients"),
    ("2", "view", "View a patient record"),
    ("3", "summarize", "Summarize a patient (live stream)"),
    ("4", "save", "Save the last summary"),
    ("5", "list", "List saved summaries"),
    ("q", "quit", "Quit"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Clinical summary client.\n"
            "Without --query/--patients: an interactive menu to search, view records, stream\n"
            "summaries and save them, for as many patients as you like.\n"
            "With them: a batch run that summarizes (and with --yes saves) several patients."
        ),
        epilog=(
            "examples:\n"
            "  python mcp_client.py                                  # interactive menu\n"
            "  python mcp_client.py --show-protocol                  # ... showing every frame\n"
            "  python mcp_client.py --query diabetes --yes           # save the top 5 hits\n"
            "  python mcp_client.py --query diabetes --patients 11,45 --yes\n"
            "  python mcp_client.py --patients 11,45 --yes --force --json > result.json\n"
            "\n"
            "keys: Ctrl-C while a summary streams cancels it (nothing is saved) and returns to\n"
            "the menu; Ctrl-C at a prompt quits with exit code 130, Ctrl-D or q with 0.\n"
            "exit codes: 0 done (batch: every patient saved, or generated without --yes),\n"
            "1 a patient failed or the server went away, 2 cannot connect or bad flags,\n"
            "130 Ctrl-C."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(parser)
    parser.add_argument(
        "--show-protocol",
        action="store_true",
        help="print every JSON-RPC frame sent (→) and received (←), the handshake included",
    )
    batch = parser.add_argument_group("batch mode (no prompts)")
    batch.add_argument("--query", help="search for this first; without --patients, use its hits")
    batch.add_argument(
        "--patients",
        type=_patient_ids,
        metavar="ID,ID,...",
        help="patient ids to summarize, comma-separated, e.g. 11,45",
    )
    batch.add_argument(
        "--top-k",
        type=int,
        choices=range(1, 51),
        default=5,
        metavar="N",
        help="how many search hits to show or use, 1-50 (default 5)",
    )
    batch.add_argument("--yes", action="store_true", help="save every summary without asking")
    batch.add_argument(
        "--force",
        action="store_true",
        help="with --yes: save summaries even if the record does not support all their claims "
        "(otherwise such a patient counts as not saved)",
    )
    batch.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document with every result on stdout; messages go to stderr",
    )
    return parser


def _patient_ids(text: str) -> list[int]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    bad = [part for part in ids if not part.isdigit() or int(part) < 1]
    if not ids or bad:
        raise argparse.ArgumentTypeError(
            f"expected positive patient ids separated by commas, e.g. 11,45; got {text!r}"
        )
    return [int(part) for part in ids]


async def run_menu(screen: Screen, client: Client, args: argparse.Namespace) -> int:
    unsaved: dict[str, Any] | None = None  # the last summary, until it is saved
    while True:
        screen.print()
        for key, _word, label in MENU:
            screen.print(f"  [bold]{key}[/]  {label}")
        choice = (await screen.ask("Choose 1-5 or q: ")).lower()
        item = next((m for m in MENU if choice in (m[0], m[1])), None)
        if item is None:
            screen.warn(f"Unknown choice {choice!r}: type a number from 1 to 5, or q to quit.")
            continue
        key, word, label = item
        if word == "quit":
            screen.info("Bye.")
            return EXIT_OK
        if word != "list":
            screen.step(int(key), label)
        try:
            unsaved = await _menu_action(screen, client, args, word, unsaved)
        except RPCError as exc:  # the server refused this one thing; the session goes on
            screen.error(exc.message)


async def _menu_action(
    screen: Screen,
    client: Client,
    args: argparse.Namespace,
    word: str,
    unsaved: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Run one menu choice; returns the summary still waiting to be saved, if any."""
    if word == "search":
        await ask_search(screen, client, args.top_k)
    elif word == "view":
        screen.patient(await ask_patient(screen, client))
    elif word == "summarize":
        record = await ask_patient(screen, client)
        result = await generate(screen, client, record, args.max_tokens)
        if result is not None:
            return None if await offer_save(screen, client, result) else result
    elif word == "save":
        if unsaved is None:
            screen.info("Nothing to save: summarize a patient first (3).")
        else:
            screen.info(f"Last summary: patient {unsaved['patient_id']} ({unsaved['name']}).")
            if await offer_save(screen, client, unsaved):
                return None
    else:
        screen.summaries(await client.list_summaries())
    return unsaved


async def run_batch(screen: Screen, client: Client, args: argparse.Namespace) -> int:
    report: dict[str, Any] = {"url": client.url, "query": args.query, "search": None}
    report["patients"] = entries = []
    code = EXIT_OK
    try:
        ids = args.patients
        if args.query is not None:
            found = await client.find(args.query, args.top_k)
            hits, corrected = found["results"], found.get("corrected")
            report["search"] = hits
            if corrected is not None:
                report["corrected"] = corrected
            if hits:
                screen.search_results(args.query, hits, corrected)
            else:
                screen.corrected(args.query, corrected)
                screen.warn(f"No patients match {args.query!r}.")
            if ids is None:
                ids = [hit["patient_id"] for hit in hits]
        entries += [{"patient_id": pid, "status": "skipped", "saved": False} for pid in ids]
        code = await _summarize_all(screen, client, args, entries)
    except RPCError as exc:
        report["error"] = exc.to_dict()
        screen.error(exc.message)
        code = EXIT_FAILED
    wanted = "saved" if args.yes else "generated"
    done = sum(entry["status"] == wanted for entry in entries)
    report["ok"] = bool(entries) and done == len(entries) and code == EXIT_OK
    screen.info(f"{wanted.capitalize()} {done} of {len(entries)} summaries.")
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    if code != EXIT_OK:
        return code
    return EXIT_OK if report["ok"] else EXIT_FAILED


async def _summarize_all(
    screen: Screen, client: Client, args: argparse.Namespace, entries: list[dict[str, Any]]
) -> int:
    """Work through the patients; stops early only on Ctrl-C or a lost connection."""
    with screen.batch(len(entries)) as progress:
        for entry in entries:
            progress.start(entry["patient_id"])
            try:
                await screen.interrupts.guard(_one(screen, client, args, entry, progress))
            except Interrupted:
                entry["status"] = "cancelled"
                return EXIT_INTERRUPTED
            except ClientError as exc:  # the connection is gone: the rest cannot run
                entry.update(status="failed", error={"message": str(exc)})
                screen.error(str(exc))
                return EXIT_FAILED
            progress.done()
    return EXIT_OK


async def _one(
    screen: Screen,
    client: Client,
    args: argparse.Namespace,
    entry: dict[str, Any],
    progress: BatchProgress,
) -> None:
    """Summarize one patient and, with --yes, save it; the outcome goes into `entry`."""
    pid = entry["patient_id"]
    try:
        result = await client.summarize(pid, progress.token, max_tokens=args.max_tokens)
    except RPCError as exc:
        entry.update(status="failed", error=exc.to_dict())
        screen.error(f"Patient {pid}: {exc.message}")
        return
    grounding = result["grounding"]
    entry.update(
        {k: result[k] for k in ("name", "summary_id", "summary", "model", "tokens", "duration_ms")},
        grounding=grounding,
        status="generated",
    )
    who = f"Patient {pid} ({result['name']})"
    screen.print(f"[bold]{who}[/]: {result['summary']}", soft_wrap=True)
    screen.grounding(grounding)
    if not args.yes:
        return
    if not grounding["ok"] and not args.force:
        entry["status"] = "not_saved"
        entry["error"] = {"message": "unsupported claims; pass --force to save anyway"}
        screen.warn(f"{who}: not saved, the record does not support every claim (--force saves)")
        return
    if await save(screen, client, result, force=args.force):
        entry.update(status="saved", saved=True)
    else:
        entry["status"] = "failed"


async def run_session(screen: Screen, args: argparse.Namespace) -> int:
    on_frame = screen.frame if args.show_protocol else None
    try:
        client = await connect(screen, args.url, args.token, args.timeout, CLIENT_NAME, on_frame)
    except ServerUnreachable as exc:
        raise ServerUnreachable(
            f"{exc}: start one with `python mcp_server.py`, or run "
            "`python interactive_streaming_demo.py`, which starts its own"
        ) from None
    async with client:
        if args.query is not None or args.patients is not None:
            return await run_batch(screen, client, args)
        return await run_menu(screen, client, args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    batch = args.query is not None or args.patients is not None
    if args.json and not batch:
        parser.error("--json needs the batch mode: add --query and/or --patients")
    if (args.yes or args.force) and not batch:
        parser.error("--yes and --force belong to the batch mode: add --query and/or --patients")
    screen = Screen(stderr=args.json)
    return screen.run(lambda: run_session(screen, args))
