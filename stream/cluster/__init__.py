"""Streams on a Ray cluster (``cluster:`` in config.yaml, ``--cluster ADDRESS``).

The head (``run.py run``/``serve``) splits the configured streams into groups (``plan``), places one
``StreamWorker`` actor per group (``worker``: the same ``build_app``/``App.run`` as one process, with
the shared PostgreSQL store), waits for them and merges their summaries (``head``). ``ray`` is
imported by ``stream.cluster.ray_adapter``, ``worker`` and ``head`` only, and only when a cluster is
configured: importing this package (or ``plan``) imports no Ray.
"""
