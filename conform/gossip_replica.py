#!/usr/bin/env python3
"""A gossip replica written against docs/protocols/gossip.md and docs/conformance.md.

It speaks the JSON-lines node protocol on stdin and stdout, so `squall-verify conform`
can replay the conformance traces against it:

    squall-verify conform --node 'python3 conform/gossip_replica.py' --role replica

Values are last-writer-wins registers: null is bottom; a write is [stamp, payload] with
stamp {"time": t, "writer": w}, and a payload of null is a delete's tombstone.
"""

import json
import sys


def order_key(value):
    """The LWW order: bottom lowest; writes by stamp (time, then writer), then payload,
    a delete's null payload below any other."""
    if value is None:
        return (0,)
    stamp, payload = value
    return (1, stamp["time"], stamp["writer"], payload is not None, payload)


def join(a, b):
    return b if order_key(b) > order_key(a) else a


class Replica:
    def __init__(self, config):
        self.peers = sorted(config["peers"])
        self.period = config["gossip_period"]  # integer microseconds
        self.value = None
        self.acked = {peer: None for peer in self.peers}

    def behind(self):
        """The peers not known to hold the value, in ascending id order."""
        return [p for p in self.peers if order_key(self.value) > order_key(self.acked[p])]

    def absorb(self, incoming):
        merged = join(self.value, incoming)
        grew = merged != self.value
        self.value = merged
        return grew

    def arm_if(self, grew, out):
        if grew and self.behind():
            out.append({"set_timer": {"timer": "Gossip", "after_us": self.period}})

    def receive(self, sender, msg, out):
        (kind, body), = msg.items()
        if kind == "Put":
            grew = self.absorb(body["value"])
            out.append({"send": {"to": sender, "msg": {"PutOk": {"seq": body["seq"]}}}})
            self.arm_if(grew, out)
        elif kind == "Gossip" and sender in self.acked:
            self.acked[sender] = join(self.acked[sender], body["value"])
            grew = self.absorb(body["value"])
            ack = {"GossipAck": {"value": self.value}}
            out.append({"send": {"to": sender, "msg": ack}})
            self.arm_if(grew, out)
        elif kind == "GossipAck" and sender in self.acked:
            self.acked[sender] = join(self.acked[sender], body["value"])
            if not self.behind():
                out.append({"cancel_timer": "Gossip"})
        else:
            out.append({"ignored": "message a replica does not expect"})

    def timeout(self, timer, out):
        if timer != "Gossip":
            out.append({"ignored": "client timer at a replica"})
            return
        behind = self.behind()
        for peer in behind:
            out.append({"send": {"to": peer, "msg": {"Gossip": {"value": self.value}}}})
        if behind:
            out.append({"set_timer": {"timer": "Gossip", "after_us": self.period}})
        else:
            out.append({"ignored": "gossip timer with every peer up to date"})


def main():
    replica = None
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        out = []
        if request["type"] == "init":
            config = request["config"]
            if "Replica" not in config:
                sys.exit(f"this program is a gossip replica, not {request['role']}")
            replica = Replica(config["Replica"])
        else:
            step = request["input"]
            if "receive" in step:
                replica.receive(step["receive"]["from"], step["receive"]["msg"], out)
            else:
                replica.timeout(step["timeout"], out)
        print(json.dumps({"outputs": out}), flush=True)


if __name__ == "__main__":
    main()
