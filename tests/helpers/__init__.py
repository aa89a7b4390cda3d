"""What the tests share besides fixtures (those are in ``tests/conftest.py``):

- ``network``: a free port, whether one is open, and what a missing service means
- ``app``: settings, keys, datasets, models and queued jobs of the service under test
- ``processes``: ``unlearnd`` processes a test starts, kills and reads the logs of
- ``servers``: a Redis and a Postgres of a drill's own, to stop and start
- ``live``: the API served over real sockets in the test process
- ``callbacks``: an HTTP endpoint that records the callbacks it is sent
- ``unlearning``: a small memorising digits setting for the unlearners' unit tests
- ``service_unlearning``: a method through the whole service on digits, measured
"""
