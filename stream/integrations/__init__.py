"""Integrations with other systems: zones, alert rules, MQTT (with Home Assistant discovery) and webhooks.

- ``zones``: named polygons per stream; the recogniser's ``ZoneTagger`` tags track events with them (pure);
- ``alerts``: alert rules and cool-downs (pure, injected clock);
- ``presence``: who is in view per stream, from the events (pure);
- ``topics``: MQTT topics, message bodies and Home Assistant discovery configs (pure);
- ``mqtt``: the MQTT link, the only paho-mqtt importer (its own thread, bounded outbox, reconnects);
- ``webhook``: signed webhook deliveries (its own thread, retries with back-off, bounded outbox);
- ``hub``: ``Integrations``, what the output stage hands every recorded event to.

Nothing here waits on the network in the caller's thread (docs/architecture.md §3).
"""
