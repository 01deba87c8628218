"""The exporter's own HTTP server: how bytes become requests and answers.

`http_server` runs it on a thread of its own; `lobby` accepts connections and holds
them until they speak; `http11` is one connection, parsed by h11, with `headgate`
(its bytes held until a head may be whole) and `messages` (which requests are read
on, the answer's head); `connections` holds the connection cap and the answers in
flight; `routes` answers each path, with `negotiation`; who may ask:
`authorisation`, `basicauth`, `passwordchecks`, `webconfig`. May import:
`exporter.metrics` (the exposition it serves) and the shared leaves. Imports no
polling code: readiness comes in through `routes.Readiness`.
"""
