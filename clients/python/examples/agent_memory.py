"""An agent records what it learned, two colleagues weigh in, and it reads back the consensus
with a proof that the winning assertion is in the log.

    stemedb serve &                      # http://127.0.0.1:18180
    python3 examples/agent_memory.py [SERVER]
"""
import sys
import time

from stemedb import Client, generate_key

server = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18180"
subject = f"kb/services/billing-api/owner-{int(time.time())}"

# Three agents, each with its own key (load yours with stemedb.load_key("agent.pem")).
me, peer, dissenter = (Client(server, key=generate_key()) for _ in range(3))

learned = me.assert_(subject, "team", "payments-platform", confidence=0.9)
print(f"recorded {learned.id} at log index {learned.log_index} ({learned.status})")
peer.assert_(subject, "team", "payments-platform", confidence=0.7)
dissenter.assert_(subject, "team", "growth", confidence=0.95)

answer = me.query(subject, lens="consensus")
r = answer.results[0]
print(f"consensus: {r.winner.object!r} (agreement {r.agreement:.2f}, conflict={r.conflict}, "
      f"{len(r.alternatives)} alternative(s))")
latest = me.query(subject, lens="latest").results[0]
print(f"latest says: {latest.winner.object!r} by agent {latest.winner.agent[:12]}…")

checkpoint = me.verify_inclusion(r.winner.id)
print(f"winner {r.winner.id[:16]}… verified in the log at tree size {checkpoint.tree_size}")
