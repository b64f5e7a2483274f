"""Operator feedback at the station: a verdict confirmed or overridden (by result id or part id) by an
operator or a downstream check, through the local API, the station page, the line's MQTT broker, OPC UA,
Modbus and the TCP line; stored durably on the device with the verdict it corrects (:mod:`.store`).

:mod:`.rules` is the pure part (what a request may say, what truth may be given, the confusion counts);
:mod:`.service` the one entry every channel calls; :mod:`.web` the local API's routes and the page.
Nothing about a frame is stored: a row holds the fields of :data:`.rules.RESULT_FIELDS` and
:data:`.rules.FEEDBACK_FIELDS`, no pixels, features or scores beyond the verdict's confidence."""
