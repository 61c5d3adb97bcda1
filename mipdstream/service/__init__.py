"""The live service: ingest -> assimilation -> policy on every reading, restartable without loss.

- :mod:`.timeline`: one patient's events in measurement-time order (reorder window, late
  events, snapshots to rewind to). Pure Python.
- :mod:`.batching`: stack one-patient posteriors into a vmapped batch and split them again.
- :mod:`.state_db`: the service's own durable state (patients, filter checkpoints, alerts).
- :mod:`.assimilator`: the micro-batching worker that keeps every posterior current.
"""
