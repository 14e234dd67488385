"""Integrator tools: talk to a running module over MQTT as an EVerest module would."""
