"""Live job events: the hub, the event tail, WebSocket and SSE streams, and stream tickets."""
