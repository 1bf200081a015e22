"""HTTP and WebSocket surface: controllers, schemas, auth and the one error mapping."""
