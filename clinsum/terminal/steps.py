"""The steps both tools walk through: connect, search, pick a patient, generate, save (with
an edit in $EDITOR first, if asked). Each takes the `Screen` and the `Client` and returns
what the next step needs."""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..client import UNKNOWN_PATIENT, Client, FrameHook, RPCError
from .screen import Interrupted, Screen

SUMMARIES_FILE = "patient_summaries.csv"


async def connect(
    screen: Screen,
    url: str,
    token: str | None,
    timeout: float,
    name: str,
    on_frame: FrameHook | None = None,
) -> Client:
    """Connect, do the MCP handshake and say in one line whom we are talking to."""
    client = await Client.connect(url, token, on_frame, timeout=timeout)
    try:
        await client.initialize(name)
    except BaseException:
        await client.close()
        raise
    screen.connected(client)
    return client


async def ask_search(screen: Screen, client: Client, top_k: int = 5) -> list[dict[str, Any]]:
    """Ask for a search term until one finds patients."""
    while True:
        query = await screen.ask("Enter disease/symptom to search for: ")
        if not query:
            screen.warn("Please type a disease or symptom to search for, e.g. diabetes.")
            continue
        try:
            found = await client.find(query, top_k)
        except RPCError as exc:
            screen.error(exc.message)
            continue
        hits, corrected = found["results"], found.get("corrected")
        if not hits:
            screen.corrected(query, corrected)
            screen.warn(f"No patients match {query!r}; try another disease or symptom.")
            continue
        screen.search_results(query, hits, corrected)
        return hits


async def ask_patient(
    screen: Screen, client: Client, prompt: str = "Enter patient ID: "
) -> dict[str, Any]:
    """Ask for a patient id until the server knows it; returns the patient's record."""
    while True:
        answer = await screen.ask(prompt)
        if not answer.isdigit() or int(answer) < 1:
            screen.warn(
                f"{answer!r} is not a patient ID: type a whole number, e.g. one from the list."
                if answer
                else "Please type a patient ID, e.g. one from the list above."
            )
            continue
        try:
            return await client.fetch(int(answer))
        except RPCError as exc:
            if exc.code == UNKNOWN_PATIENT:
                screen.warn(f"There is no patient with ID {answer}; pick one from the list.")
            else:
                screen.error(exc.message)


async def generate(
    screen: Screen, client: Client, record: dict[str, Any], max_tokens: int | None
) -> dict[str, Any] | None:
    """Stream one summary; None if it was cancelled (Ctrl-C) or the server refused it."""
    llm = client.llm_label
    screen.info(f"Generating a clinical summary of {record['name']}...")
    screen.print(
        f"[dim]Tokens will appear below as {escape(llm or 'the model')} generates them; "
        "Ctrl-C cancels.[/]"
    )
    try:
        with screen.streaming(llm) as view:
            result = await screen.interrupts.guard(
                client.summarize(
                    record["patient_id"], view.token, view.queued, max_tokens=max_tokens
                )
            )
            view.finish(result)
    except Interrupted:
        screen.warn("Generation cancelled; nothing was saved.")
        return None
    except RPCError as exc:
        screen.error(exc.message)
        return None
    screen.grounding(result["grounding"])
    screen.digest(result["digest"])
    return result


async def save(
    screen: Screen,
    client: Client,
    result: dict[str, Any],
    *,
    force: bool = False,
    text: str | None = None,
) -> bool:
    """Save by summary id (so nothing partial can be saved), with the clinician's `text` if
    edited, and show the row."""
    try:
        saved = await client.save(result["summary_id"], force=force, text=text)
    except RPCError as exc:
        screen.error(exc.message)
        return False
    screen.success(f"Summary saved to {saved['path']}")
    try:
        rows = await client.list_summaries()
    except RPCError as exc:
        screen.warn(f"Saved, but the file could not be read back: {exc.message}")
        return True
    row = next((r for r in rows if r["patient_id"] == str(saved["patient_id"])), None)
    if row is not None:
        screen.saved_row(row, saved["path"])
    return True


SAVE_CHOICES = {"y": "y", "yes": "y", "n": "n", "no": "n", "e": "e", "edit": "e"}
EDIT_HELP = (
    "# Edit the summary above. Lines starting with '#' are ignored;\n"
    "# an empty text keeps the draft as it was.\n"
)


async def offer_save(screen: Screen, client: Client, result: dict[str, Any]) -> bool:
    """Ask before saving; `e` edits the draft (re-checked, verdict shown, then asked again);
    ask again, explicitly, before saving unsupported claims."""
    text, grounding = result["summary"], result["grounding"]
    while True:
        answer = await screen.ask_choice(
            f"Save this summary to {SUMMARIES_FILE}? (y/n/e = edit): ",
            SAVE_CHOICES,
            "y, n or e (edit)",
        )
        if answer == "n":
            screen.info("Not saved.")
            return False
        if answer == "y":
            break
        edited = await edit_text(screen, text)
        if edited is None or edited == text:
            screen.info("Summary unchanged.")
            continue
        try:
            grounding = await client.check_summary(result["summary_id"], edited)
        except RPCError as exc:
            screen.error(exc.message)
            continue
        text = edited
        screen.draft(text)
        screen.grounding(grounding)
    force = not grounding["ok"]
    if force:
        count = sum(c["blocking"] for c in grounding["unsupported"])
        screen.warn(
            f"This summary makes {count} claim(s) the record does not support (in red above)."
        )
        if not await screen.ask_yes_no("Save it anyway, unsupported claims included? (y/n): "):
            screen.info("Not saved.")
            return False
    changed = text if text != result["summary"] else None
    return await save(screen, client, result, force=force, text=changed)


async def edit_text(screen: Screen, draft: str) -> str | None:
    """The draft as the user edited it, or None if they left it empty.

    Like `git commit`: $VISUAL, else $EDITOR, opened on a temporary file; without either (or
    if it cannot run), one line typed at the prompt replaces the draft.
    """
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor:
        with tempfile.TemporaryDirectory(prefix="clinsum-") as folder:
            path = Path(folder) / "SUMMARY_EDITMSG"
            path.write_text(f"{draft}\n{EDIT_HELP}", encoding="utf-8")
            try:
                proc = await asyncio.create_subprocess_exec(*shlex.split(editor), str(path))
                code = await proc.wait()
            except (OSError, ValueError) as exc:
                screen.warn(f"Cannot run the editor {editor!r} ({exc}); type the text instead.")
            else:
                if code != 0:
                    screen.warn(f"The editor {editor!r} exited with status {code}; draft kept.")
                    return None
                lines = path.read_text(encoding="utf-8").splitlines()
                text = "\n".join(ln for ln in lines if not ln.startswith("#")).strip()
                return text or None
    screen.info(f"Draft:\n{draft}")
    text = await screen.ask("Type the new summary on one line (empty keeps the draft): ")
    return text or None
