"""``pyroblur`` command line: the one home of every command, on the top floor of the package order
(it runs flows; nothing in ``flows``, ``tasks`` or ``pyroblur`` imports it).

Each command calls the same flow or library function the deployments and the service use:

    app.py        the typer app, one-line errors and exit codes, lazy command loading, main()
    pipeline.py   run, check-config, download, app, corrections
    anonymize.py  anonymize (its options generated from ``AnonymizeOptions``)
    serve.py      serve
    trigger.py    trigger (the client side is ``tasks.trigger``)

Every error is one line on stderr (``error: ...``) naming the file, key or URL, and the exit code
says what kind it was (``pyroblur.core.errors``): 0 success, 1 the work failed or could not
start, 2 configuration/usage error or failed precondition, 3 unreadable or hostile input
(anonymize: some files skipped), 130/143 stopped by SIGINT/SIGTERM. ``--debug`` (or
``PYROBLUR_DEBUG=1``) adds the traceback.
"""

from flows.cli.app import app, main

__all__ = ["app", "main"]
