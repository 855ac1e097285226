"""The faces of the service: each one renames and re-spells, then calls `Tool.run`.

A face never checks a parameter, never calls a handler directly and never touches the store
or the index. What they share sits below them: `events.py` (what a running tool reports)
and `access.py` (who may call).
"""
