"""A local, Langfuse-compatible HTTP server for the offline demo, the tests and the benchmarks.

It speaks the parts of the Langfuse public API the project uses (wire facts in
``../shared/docs/PROTOCOLS.md``, shapes from Langfuse's OpenAPI spec v4.16.0):

- ``GET  /api/public/health``            no auth, ``{"status":"OK","version":...}``
- ``GET  /api/public/projects``          the project of the key pair (``auth_check()``)
- ``POST /api/public/otel/v1/traces``    OTLP protobuf (gzip or not) or OTLP JSON, from the SDK
- ``GET  /api/public/v2/observations``   field groups, filters, keyset cursor, newest first
- ``POST /api/public/scores``            a JSON list of scores -> 202 / 207, upsert by id+timestamp
                                          (v4.16: one object -> 200 ``{"id"}``)
- ``GET  /api/public/v3/scores``         filters, field groups, base64url cursor
- ``POST/GET /api/public/score-configs``, ``GET/PATCH /api/public/score-configs/{configId}``
- ``GET/POST /api/public/annotation-queues``, ``GET /api/public/annotation-queues/{queueId}``
- ``GET/POST /api/public/annotation-queues/{queueId}/items``,
  ``GET/PATCH/DELETE /api/public/annotation-queues/{queueId}/items/{itemId}``
  (page/limit paging with ``meta`` = page, limit, totalItems, totalPages)

Server profiles (``LangfuseStore(profile=...)``, ``LangfuseSandbox(profile=...)``):

- ``current`` (default): Langfuse Cloud / self-hosted v4.59+, the contract SDK 5 is built for.
- ``v4.16``: self-hosted v4.16.0 as its source shows: ``POST /api/public/scores`` takes one object
  (a list is a 400), stamped on arrival; score rows keyed by (day, name, id) and the v3 list shows
  one row per id; v2 observations answer 404 without the preview opt-in (``preview_opt_in``);
  the model name comes back only as ``model``.

On both: scores with a ``configId`` are checked the way Langfuse's ingestion worker does, AFTER
the answer said OK (unknown or archived config, dataType mismatch, value out of range or not a
category label: silently dropped, kept in ``store.dropped_scores``; the score takes the config's
name); tags are each observation's own (its span's attributes); unknown ``fields`` groups are
dropped; a duplicate annotation queue name is a 400; the annotation-queue endpoints have their own
rate-limit bucket. ``advance_clock`` moves the server's "now"; ``set_score_read_lag`` hides scores
from reads for a while after they are written.

Every call but health needs HTTP Basic auth with the store's key pair. Data lives in a
:class:`LangfuseStore` (thread-safe, in memory), which tests and benchmarks can also seed directly
(``add_trace`` / ``add_observation`` / ``add_score``) without going through HTTP.

Faults (:mod:`sandbox.faults`) apply per endpoint name: ``health``, ``projects``, ``otel``,
``observations``, ``scores.create``, ``scores.list``, ``score_configs.{create,list,get,update}``,
``annotation_queues.{create,list,get}``,
``annotation_queue_items.{create,list,get,update,delete}``.

Modules: ``common`` (constants, errors, HTTP helpers), ``records``, ``store`` (``store_base``,
``store_observations``, ``store_scores``, ``store_queues``), ``otlp`` (decoding), ``validation``,
``filters``; the routes in ``observations``, ``ingest``, ``scores``, ``score_configs``,
``annotation_queues``, put together by ``app`` (one route table, one auth dependency) and served by
``server``. ``sandbox.langfuse_app`` re-exports the public names.
"""
