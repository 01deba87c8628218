"""Polling: what the exporter knows of the account, cycle by cycle.

`poller` runs a cycle (listing, `sweep`, fetches that outlive their cycle:
`inflight`) and folds it into the `tracker`'s state, published as an immutable
`snapshot`; `configured` and `sharding` say which sessions are this replica's.
The account beyond sessions: `account` (the poller), `functions` (runs counted
once), `schedule` (EventBridge expressions), `accountsnapshot`. May import:
`exporter.notte` and the shared leaves. Imports no metrics or web code: it
reports through `poller.PollObserver` and `client.RequestObserver`.
"""
