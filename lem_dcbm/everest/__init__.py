"""The EVerest side: topics, envelopes, schemas, the MQTT bus and the module adapter."""
