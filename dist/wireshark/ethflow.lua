-- Wireshark/tshark dissector for ethflow frames, wire format version 2
-- (docs/wire.md). Load it with
--     tshark -X lua_script:ethflow.lua -r capture.pcap -V
-- or copy it into ~/.local/lib/wireshark/plugins/ (Wireshark >= 3.6).
-- Ethertype 0x88B5 is registered; set another in the protocol's preferences
-- (ethflow.ethertype), and tick "layer-key trailer" for a keyed layer.
-- Malformed frames are flagged as expert errors (filter: ethflow.malformed or
-- the individual ethflow.bad_* expert fields), never thrown away silently.

local p = Proto("ethflow", "ethflow")

local HEADER_LEN = 20
local TRAILER_LEN = 25
local VERSION = 2

local type_names = {
    [0] = "DATA", [1] = "NAME_QUERY", [2] = "NAME_REPLY", [3] = "FLOW_REQ",
    [4] = "FLOW_REPLY", [5] = "DEALLOC", [6] = "DEALLOC_ACK", [7] = "KEEP_ALIVE",
    [8] = "UNKNOWN_EID", [9] = "CHALLENGE", [10] = "CHALLENGE_REPLY",
}
-- Fixed payload lengths; DATA (0) has none.
local fixed_len = { [1] = 32, [2] = 32, [3] = 78, [4] = 21, [5] = 0, [6] = 0,
    [7] = 24, [8] = 0, [9] = 16, [10] = 9 }
local reply_codes = { [0] = "OK", [1] = "NO_SUCH_NAME", [2] = "NO_ACCEPTING_PROCESS",
    [3] = "RESOURCE_LIMIT" }
local verdicts = { [0] = "Same", [1] = "Different" }

local F = ProtoField
local f = {
    version = F.uint8("ethflow.version", "Version"),
    type = F.uint8("ethflow.type", "Type", base.DEC, type_names),
    length = F.uint16("ethflow.length", "Payload length"),
    dst_eid = F.uint64("ethflow.dst_eid", "Destination eid", base.HEX),
    src_eid = F.uint64("ethflow.src_eid", "Source eid", base.HEX),
    padding = F.bytes("ethflow.padding", "Ethernet padding"),

    data_sdu = F.bytes("ethflow.data.sdu", "SDU"),
    nq_hash = F.bytes("ethflow.name_query.hash", "Name hash (SHA-256)"),
    nr_hash = F.bytes("ethflow.name_reply.hash", "Name hash (SHA-256)"),

    req_instance = F.uint64("ethflow.flow_req.instance", "Instance nonce", base.HEX),
    req_hash = F.bytes("ethflow.flow_req.name_hash", "Name hash (SHA-256)"),
    req_delay = F.uint32("ethflow.flow_req.qos_delay", "QoS delay (ms)"),
    req_bandwidth = F.uint64("ethflow.flow_req.qos_bandwidth", "QoS bandwidth (bit/s)"),
    req_availability = F.uint8("ethflow.flow_req.qos_availability", "QoS availability"),
    req_loss = F.uint32("ethflow.flow_req.qos_loss", "QoS loss (ppm)"),
    req_ber = F.uint32("ethflow.flow_req.qos_ber", "QoS bit error rate (ppb)"),
    req_in_order = F.uint8("ethflow.flow_req.qos_in_order", "QoS in order"),
    req_max_gap = F.uint32("ethflow.flow_req.qos_max_gap", "QoS max gap"),
    req_timeout = F.uint64("ethflow.flow_req.qos_timeout", "QoS liveness timeout (ms)"),
    req_max_sdu = F.uint32("ethflow.flow_req.max_sdu", "Max SDU"),

    rep_instance = F.uint64("ethflow.flow_reply.instance", "Instance nonce", base.HEX),
    rep_code = F.uint8("ethflow.flow_reply.code", "Code", base.DEC, reply_codes),
    rep_max_sdu = F.uint32("ethflow.flow_reply.max_sdu", "Max SDU"),
    rep_timeout = F.uint64("ethflow.flow_reply.timeout", "Liveness timeout (ms)"),

    ka_sender = F.uint64("ethflow.keep_alive.sender_instance", "Sender instance", base.HEX),
    ka_receiver = F.uint64("ethflow.keep_alive.receiver_instance", "Receiver instance", base.HEX),
    ka_challenge = F.uint64("ethflow.keep_alive.challenge", "Challenge", base.HEX),

    ch_challenge = F.uint64("ethflow.challenge.challenge", "Challenge", base.HEX),
    ch_believed = F.uint64("ethflow.challenge.believed_instance", "Believed instance", base.HEX),

    cr_echo = F.uint64("ethflow.challenge_reply.echo", "Echo", base.HEX),
    cr_verdict = F.uint8("ethflow.challenge_reply.verdict", "Verdict", base.DEC, verdicts),

    tr_key_id = F.uint8("ethflow.trailer.key_id", "Key id"),
    tr_counter = F.uint64("ethflow.trailer.counter", "Counter"),
    tr_tag = F.bytes("ethflow.trailer.tag", "Tag (AES-256-GCM)"),
}
local list = {}
for _, v in pairs(f) do list[#list + 1] = v end
p.fields = list

local E = ProtoExpert
local ex = {
    malformed = E.new("ethflow.malformed", "Malformed ethflow frame", expert.group.MALFORMED, expert.severity.ERROR),
    truncated = E.new("ethflow.bad_truncated", "Truncated", expert.group.MALFORMED, expert.severity.ERROR),
    version = E.new("ethflow.bad_version", "BadVersion", expert.group.MALFORMED, expert.severity.ERROR),
    type = E.new("ethflow.bad_type", "BadType", expert.group.MALFORMED, expert.severity.ERROR),
    length = E.new("ethflow.bad_length", "BadLength", expert.group.MALFORMED, expert.severity.ERROR),
    field = E.new("ethflow.bad_field", "BadField", expert.group.MALFORMED, expert.severity.ERROR),
}
p.experts = { ex.malformed, ex.truncated, ex.version, ex.type, ex.length, ex.field }

p.prefs.ethertype = Pref.uint("Ethertype", 0x88B5, "Ethertype of the ethflow layer")
p.prefs.keyed = Pref.bool("Layer-key trailer", false,
    "Frames carry the 25-byte layer-key trailer after the payload")

local function bad(tree, item, which, text)
    tree:add_proto_expert_info(ex.malformed, text)
    item:add_proto_expert_info(which, text)
end

-- name, size, field, check(value) -> error text or nil
local layouts = {
    [1] = { { 32, f.nq_hash } },
    [2] = { { 32, f.nr_hash } },
    [3] = { { 8, f.req_instance }, { 32, f.req_hash }, { 4, f.req_delay },
        { 8, f.req_bandwidth }, { 1, f.req_availability }, { 4, f.req_loss },
        { 4, f.req_ber }, { 1, f.req_in_order, function(v) if v > 1 then return "in_order not 0/1" end end },
        { 4, f.req_max_gap }, { 8, f.req_timeout }, { 4, f.req_max_sdu } },
    [4] = { { 8, f.rep_instance }, { 1, f.rep_code, function(v) if v > 3 then return "reply code not 0-3" end end },
        { 4, f.rep_max_sdu }, { 8, f.rep_timeout } },
    [7] = { { 8, f.ka_sender }, { 8, f.ka_receiver }, { 8, f.ka_challenge } },
    [9] = { { 8, f.ch_challenge }, { 8, f.ch_believed } },
    [10] = { { 8, f.cr_echo }, { 1, f.cr_verdict, function(v) if v > 1 then return "verdict not 0/1" end end } },
}

function p.dissector(buf, pinfo, root)
    local n = buf:len()
    pinfo.cols.protocol = "ethflow"
    local tree = root:add(p, buf(), "ethflow")
    if n < HEADER_LEN then
        bad(tree, tree, ex.truncated, "Truncated: " .. n .. " bytes, header needs 20")
        pinfo.cols.info = "ethflow [Truncated]"
        return n
    end
    local version = buf(0, 1):uint()
    local ftype = buf(1, 1):uint()
    local len = buf(2, 2):uint()
    local vi = tree:add(f.version, buf(0, 1))
    local ti = tree:add(f.type, buf(1, 1))
    local li = tree:add(f.length, buf(2, 2))
    tree:add(f.dst_eid, buf(4, 8))
    tree:add(f.src_eid, buf(12, 8))
    local name = type_names[ftype] or ("type " .. ftype)
    pinfo.cols.info = string.format("%s dst=0x%s src=0x%s len=%d", name,
        buf(4, 8):uint64():tohex(), buf(12, 8):uint64():tohex(), len)
    tree:append_text(", " .. name)
    -- Checks in the codec's order: version, type, length vs frame, length vs type, fields.
    if version ~= VERSION then
        bad(tree, vi, ex.version, "BadVersion(" .. version .. "), expected 2")
        return n
    end
    if type_names[ftype] == nil then
        bad(tree, ti, ex.type, "BadType(" .. ftype .. ")")
        return n
    end
    local trailer = p.prefs.keyed and TRAILER_LEN or 0
    if HEADER_LEN + len + trailer > n then
        bad(tree, li, ex.truncated, string.format("Truncated: payload length %d (+%d trailer) but %d bytes after the header",
            len, trailer, n - HEADER_LEN))
        return n
    end
    local want = fixed_len[ftype]
    if want ~= nil and len ~= want then
        bad(tree, li, ex.length, string.format("BadLength: %s carries %d bytes, the length says %d", name, want, len))
        return n
    end
    local payload = buf(HEADER_LEN, len)
    if ftype == 0 then
        if len > 0 then tree:add(f.data_sdu, payload) end
    elseif layouts[ftype] then
        local sub = tree:add(p, payload, name)
        local off = 0
        for _, l in ipairs(layouts[ftype]) do
            local size, field, check = l[1], l[2], l[3]
            local item = sub:add(field, payload(off, size))
            if check then
                local err = check(payload(off, size):uint())
                if err then bad(tree, item, ex.field, "BadField: " .. err) end
            end
            off = off + size
        end
    end
    local at = HEADER_LEN + len
    if trailer > 0 then
        local t = tree:add(p, buf(at, TRAILER_LEN), "Layer-key trailer")
        t:add(f.tr_key_id, buf(at, 1))
        t:add(f.tr_counter, buf(at + 1, 8))
        t:add(f.tr_tag, buf(at + 9, 16))
        at = at + TRAILER_LEN
    end
    if at < n then tree:add(f.padding, buf(at, n - at)) end
    return n
end

local registered = nil
function p.init()
    local t = DissectorTable.get("ethertype")
    if registered ~= nil and registered ~= p.prefs.ethertype then t:remove(registered, p) end
    t:add(p.prefs.ethertype, p)
    registered = p.prefs.ethertype
end
DissectorTable.get("ethertype"):add(0x88B5, p)
registered = 0x88B5
