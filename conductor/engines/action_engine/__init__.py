"""The action engine: compiles a flow once, then schedules its atoms serially or on threads."""
