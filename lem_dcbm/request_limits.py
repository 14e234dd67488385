"""How much of a caller's input the module takes: the same for both EVerest adapters.

The module protocol's commands (``lem_dcbm.everest.commands``) and the external API's
requests (``lem_dcbm.everest_api.requests``) are refused by these limits alike.
"""

from __future__ import annotations

#: Calls waiting behind the one in progress before new ones are refused. EvseManager sends
#: one call at a time per connector; a flood must not queue work for hours.
MAX_WAITING = 32
#: Larger requests are refused. The largest valid call is a few KiB.
MAX_PAYLOAD_BYTES = 64 * 1024
#: Refused requests up to this size are still read, only to address the refusal.
MAX_ROUTABLE_BYTES = 4 * 1024 * 1024
