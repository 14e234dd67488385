"""Pure module logic: the meter client and the clock are injected, nothing here knows MQTT."""
