"""The line's own interfaces: triggered inspection (:mod:`.matcher`, :mod:`.station`), the one result
path (:mod:`.bus`), and the servers a PLC or a MES speaks to: a plain TCP line (:mod:`.tcp_line`),
Modbus TCP (:mod:`.modbus_server`, map in :mod:`.modbus_map`) and OPC UA (:mod:`.opcua_server`).
The servers' libraries (pymodbus, asyncua: the ``line`` extra) are imported only when configured."""
