"""The MQTT settings a command line shows - defaults, bounds, where the password may come
from - apart from the session, link and bridge that use them, so that `bms-emu` builds its
parsers without importing aiomqtt and paho (start-up time of every command)."""

from protocol.framing import DELIMITER, MAX_ENCODED_BYTES

PASSWORD_ENV = "BMS_MQTT_PASSWORD"
MAX_MESSAGE_BYTES = MAX_ENCODED_BYTES + 2 * len(DELIMITER)  # the longest frame, delimited
MIN_FRAME_RATE_PER_S = 50.0  # requests a host may send while a slow rig sends too
COMMAND_RATE_PER_S = 10.0  # taken on each cmd/<name>; the rest refused unread
