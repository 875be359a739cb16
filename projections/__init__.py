"""Read models: events to rows, each with its tracking position."""
