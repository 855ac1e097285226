"""How the tools draw what the server answers: a patient's record, search results, the
digest, a grounding verdict, saved summaries.

`Views` is a part of `Screen` (which inherits it) and writes through `Screen.print`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ..client import Client
from ..records.model import NOT_RECORDED
from ..scores import format_score


class Views:
    """The drawing methods of `Screen`: each writes through `print` (and `info`)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        raise NotImplementedError  # Screen.print

    def info(self, text: str) -> None:
        raise NotImplementedError  # Screen.info

    def connected(self, client: Client) -> None:
        info = client.server_info
        name = info.get("name", "server")
        version = info.get("version", "?")
        tools = ", ".join(t["name"] for t in client.tools)
        self.print(
            f"[WebSocket] Connected to {client.url}: {name} {version}, "
            f"MCP {client.protocol_version or '?'}, tools: {tools}",
            style="dim",
            markup=False,
            soft_wrap=True,
        )

    # -- records -----------------------------------------------------------------------------

    def corrected(self, query: str, corrected: str | None) -> None:
        """Say which query was searched when the server respelled the one typed."""
        if corrected is not None:
            self.print(
                f"Showing results for [bold]{escape(corrected)}[/] (you typed {escape(query)!r})"
            )

    def search_results(
        self, query: str, hits: list[dict[str, Any]], corrected: str | None = None
    ) -> None:
        self.corrected(query, corrected)
        shown = corrected if corrected is not None else query
        self.print(f"Found {count(len(hits), 'patient')} matching [bold]{escape(shown)!r}[/]:")
        table = Table(show_edge=False, header_style="bold")
        for column in ("#", "ID", "Name", "Age", "Gender", "Score", "Matched"):
            table.add_column(column, justify="right" if column in {"#", "ID", "Age"} else "left")
        for n, hit in enumerate(hits, 1):
            table.add_row(
                str(n),
                str(hit["patient_id"]),
                hit["name"],
                str(hit["age"]),
                hit["gender"],
                f"{hit['score']:.3f}",
                _first(hit["matched"], 2),
            )
        self.print(table)

    def patient(self, record: dict[str, Any]) -> None:
        self.print(
            f"[bold]Patient {record['patient_id']}: {escape(record['name'])}[/], "
            f"{record['age']}, {escape(record['gender'])}"
        )
        # Older servers send no scale: their scores are on 0-1.
        scale = record.get("score_scale", 1.0)
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold")
        facts.add_column()
        risk = _score(record["risk_score"], scale)
        if record["base_score"] is not None:
            risk += f" (base {_score(record['base_score'], scale)})"
        for label, value in (
            ("Source id", record.get("source_id")),
            ("Deceased", record.get("deceased")),
            ("Symptoms", record["current_symptoms"]),
            ("Blood pressure", _measured(record["current_bp"], " mmHg")),
            ("Blood sugar", _measured(record["current_sugar"], " mg/dL")),
            ("Risk score", risk),
            ("History", record["medical_history"]),
            ("Past history", record.get("past_history")),
            ("Medications", record["current_medications"]),
        ):
            if value is not None:
                facts.add_row(label, str(value))
        self.print(facts)
        visits = record["visit_history"]
        if not visits:
            self.print("[dim]No earlier visits.[/]")
            return
        table = Table(title="Visit history", show_edge=False, header_style="bold")
        # A file's own per-visit fields (the original tool's symptom_score, bp_risk, ...)
        # get a column each, after ours, so that nothing the record holds is hidden.
        extra = [k for k in dict.fromkeys(k for v in visits for k in v) if k not in _VISIT_SHOWN]
        for column in ("Date", "Symptoms", "BP", "Sugar", "Risk", *extra, "Outcome", "Notes"):
            table.add_column(column)
        for v in visits:
            table.add_row(
                v["date"],
                v["symptoms"],
                _measured(v["bp"]),
                _measured(v["sugar"]),
                _score(v["risk_score"], scale),
                *(_cell(v.get(k)) for k in extra),
                v["outcome"],
                v["notes"],
            )
        self.print(table)

    def grounding(self, grounding: dict[str, Any]) -> None:
        """The check under the streamed text; claims that block saving in red."""
        blocking = [c for c in grounding["unsupported"] if c["blocking"]]
        coverage = f"coverage {grounding['coverage']:.2f}"
        if grounding["ok"]:
            self.print(f"[green]✓ All facts supported by the record ({coverage})[/]")
        else:
            self.print(
                f"[bold red]✗ {len(blocking)} claim(s) not supported by the record ({coverage}):[/]"
            )
        for claim in grounding["unsupported"]:
            colour = "red" if claim["blocking"] else "yellow"
            note = "" if claim["blocking"] else " (does not block saving)"
            self.print(
                f"[{colour}]  - {escape(claim['kind'])} {escape(claim['text'])!r}: "
                f"{escape(claim['reason'])}{note}[/]"
            )
        if grounding["missing"]:
            self.print(f"[dim]  Not mentioned: {escape('; '.join(grounding['missing']))}[/]")

    def digest(self, digest: dict[str, Any]) -> None:
        """The chart at a glance: flags, trends, medication changes, the latest visit."""
        lines = []
        for v in digest["vitals"]:
            colour = "red" if v["flagged"] else "yellow" if v["mild"] else "green"
            lines.append(
                f"[{colour}]{escape(v['measure'])} {escape(v['value'])} {escape(v['unit'])}: "
                f"{escape(v['category'])}[/]"
            )
        for t in digest["trends"]:
            if t["meaningful"]:
                path = " → ".join(f"{p['value']:g}" for p in t["points"])
                lines.append(
                    f"{escape(t['measure'])} {t['direction']} since {t['points'][0]['date']}: "
                    f"{path} {escape(t['unit'])} (latest step {t['latest_step']})"
                )
        for m in digest["med_changes"]:
            detail = f" ({m['before']} → {m['after']})" if m["change"] == "dose changed" else ""
            lines.append(
                f"{escape(m['drug'])} {m['change']}{escape(detail)} since the latest visit"
            )
        if digest["new_conditions"]:
            lines.append(
                "added since the first visit: " + escape(", ".join(digest["new_conditions"]))
            )
        latest = digest["latest_visit"]
        if latest:
            lines.append(
                f"{digest['visits']} visit(s) over {digest['span_days']} days; latest "
                f"{latest['date']}: {escape(latest['outcome'])}. {escape(latest['key_point'])}"
            )
        self.print("[bold]Digest[/]")
        for line in lines:
            self.print(f"  {line}")

    def draft(self, text: str) -> None:
        self.print("[bold]Edited summary:[/]")
        self.print(escape(text), soft_wrap=True)

    def saved_row(self, row: dict[str, str], path: str) -> None:
        """The row exactly as `grep "^ID," file` prints it, which is how people check."""
        line = io.StringIO()
        csv.writer(line, lineterminator="").writerow(row.values())
        self.print(f'$ grep "^{row["patient_id"]}," {Path(path).name}', style="dim", markup=False)
        self.print(line.getvalue(), markup=False, soft_wrap=True)

    def summaries(self, rows: list[dict[str, str]]) -> None:
        if not rows:
            self.info("No summaries saved yet.")
            return
        table = Table(show_edge=False, header_style="bold")
        for column in ("ID", "Name", "Grounded", "Model", "Generated", "Summary"):
            table.add_column(column, overflow="fold" if column == "Summary" else "ellipsis")
        for row in rows:
            table.add_row(
                row["patient_id"],
                row["name"],
                row.get("grounded", ""),
                row.get("model", ""),
                row.get("generated_at", ""),
                row["summary"],
            )
        self.print(f"{count(len(rows), 'saved summary', 'saved summaries')}:")
        self.print(table)


# Visit keys shown in the fixed columns, or deliberately left out (history, medications and
# base score are in the record above the table).
_VISIT_SHOWN = frozenset(
    {"date", "symptoms", "bp", "sugar", "risk_score", "outcome", "notes"}
    | {"history", "medications", "base_score"}
)


def _measured(value: Any, unit: str = "") -> str:
    """A value as the record has it; null on the wire: not measured."""
    return NOT_RECORDED if value is None else f"{value}{unit}"


def _score(value: float | None, scale: float) -> str:
    return NOT_RECORDED if value is None else format_score(value, scale)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """ "1 patient", "3 patients"."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def _first(items: list[str], n: int) -> str:
    """The first `n` items; "; " between them, since an item may hold commas itself
    ('Chronic neck pain (history, similar to "neck ache" 0.81)')."""
    more = f"; +{len(items) - n} more" if len(items) > n else ""
    return "; ".join(items[:n]) + more
