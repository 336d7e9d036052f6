# The twin scenario (sourced by init.sh): joins, runs edgecore with its embedded MQTT broker,
# drives a device twin round trip through that broker with edge-mqtt, and reports edgecore's
# memory. The env sets DEVICE, DESIRED and REPORT.

edgecore join --cloud 10.0.2.2 --ws-port "$WS" --cert-port "$CERT" --token "$TOKEN" \
    --node-name "$NODE" --data-dir /var/lib/edgecore --cri-endpoint "" || fail "edgecore join"
echo "EK-JOINED uptime_s=$(cut -d' ' -f1 /proc/uptime)"
edgecore run --data-dir /var/lib/edgecore --log-level info &
EDGE=$!

# The device arrives from the cloud once the node is connected: ask for its twin until the
# desired value is there, then report a value as a mapper would.
T="\$hw/events/device/default/$DEVICE/twin"
edge-mqtt req -t "$T/get" -m '{"event_id":"vm-get"}' -r "$T/get/result" \
    --match "\"$DESIRED\"" -W 90s >/tmp/get || fail "twin get"
echo "EK-TWIN-GET $(cat /tmp/get)"
edge-mqtt req -t "$T/update" -r "$T/update/result" --match "\"$REPORT\"" -W 30s \
    -m "{\"event_id\":\"vm-update\",\"timestamp\":1,\"twin\":{\"temperature\":{\"actual\":{\"value\":\"$REPORT\"},\"metadata\":{\"type\":\"string\"}}}}" \
    >/tmp/update || fail "twin update"
echo "EK-TWIN-UPDATE $(cat /tmp/update)"

S=/proc/$EDGE/status
echo "EK-FOOTPRINT rss_kb=$(kb VmRSS $S) anon_kb=$(kb RssAnon $S) hwm_kb=$(kb VmHWM $S) threads=$(kb Threads $S) memavail_kb=$(kb MemAvailable /proc/meminfo) uptime_s=$(cut -d' ' -f1 /proc/uptime)"
wait $EDGE
fail "edgecore exited with status $?"
