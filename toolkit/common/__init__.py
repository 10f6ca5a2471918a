"""Small helpers every layer shares: tensor specs, batching, text, units, a quiet stdout,
progress events, a JSON default, Ray errors unwrapped."""
