"""Anonymization as an HTTP service (``pyroblur serve``): FastAPI over the library's own
anonymize functions.

* :mod:`.settings` limits and keys (environment ``PYROBLUR_SERVE_*``);
* :mod:`.champion` the one place that asks which model serves (and polls for promotions);
* :mod:`.batcher` dynamic batching of detector calls with a maximum wait and a bounded queue;
* :mod:`.jobs` durable video jobs in a SQLite table under the data dir, run by a worker thread;
* :mod:`.params` request options generated from :class:`~pyroblur.anonymize.options.AnonymizeOptions`;
* :mod:`.app` the FastAPI application (endpoints, errors, metrics, the web page).

Nothing here imports Prefect.
"""

from pyroblur.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
