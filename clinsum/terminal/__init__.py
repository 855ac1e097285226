"""Everything the two command-line tools (`demo`, `session`) show and ask, and the steps they
share.

- `screen.py`: `Screen`, the one place that writes to the user and reads their answers (plain
  or colour, `ask`, `run`: how a tool ends), with `Interrupts` (Ctrl-C) and `LineReader`;
- `views.py`: how a patient, search results, a digest, a grounding verdict, saved summaries
  are drawn (methods of `Screen`);
- `live.py`: the live displays, one generation streaming (`StreamView`) and a batch run
  (`BatchProgress`);
- `steps.py`: the steps both tools walk through (`connect`, `ask_search`, `ask_patient`,
  `generate`, `save`, `offer_save`, `edit_text`).
"""
