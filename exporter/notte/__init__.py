"""The Notte API, as the exporter speaks it: the client, reading its answers, the objects.

`client` is the only code that talks HTTP to Notte; `answers` reads and caps an
answer's body; `model` and `accountmodel` are the objects it returns; `apikey`
holds the key. May import: the shared leaves (`exporter.settings`,
`exporter.labels`, `exporter.logs`). Imports no polling, metrics or web code:
what it records reaches the self-metrics through `client.RequestObserver`.
"""
