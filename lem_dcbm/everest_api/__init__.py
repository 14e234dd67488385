"""EVerest's external API for powermeters (``everest_api/1/powermeter/{module_id}``).

The second way into EVerest, beside the module protocol of :mod:`lem_dcbm.everest`: the
bridge module ``powermeter_API`` provides the ``powermeter`` interface inside EVerest and
talks to this module over a versioned MQTT API, so the module can run in a container of
its own. The same controller, journal and monitors serve both; only the bus side differs.
``docs/everest-api.md`` tells the story.
"""
