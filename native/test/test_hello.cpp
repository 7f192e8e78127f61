// The pure parts of connection set-up (native/core/hello.h): the hello's bytes, how a hello is judged, the
// listener's per-connection state machine fed a byte at a time, and the early-memory budget.
#include <cstring>

#include "check.h"
#include "hello.h"

using namespace tccl;

namespace {

GroupView group(uint64_t epoch = 5, int me = 0, size_t n = 3) {
  GroupView g;
  g.epoch = epoch;
  g.myIndex = me;
  g.worldSize = n;
  for (size_t i = 0; i < 16; ++i) g.ticket[i] = static_cast<uint8_t>(i * 7 + 1);
  return g;
}

Hello helloFor(const GroupView& g, uint32_t from = 1) {
  Hello h;
  h.epoch = g.epoch;
  h.from = from;
  h.to = static_cast<uint32_t>(g.myIndex);
  h.index = 3;
  h.count = 8;
  h.ticket = g.ticket;
  return h;
}

void testWire() {
  GroupView g = group();
  Hello h = helloFor(g);
  uint8_t buf[kHelloSize];
  encodeHello(h, buf);
  Hello back;
  CHECK(decodeHello(buf, back));
  CHECK(back.epoch == 5 && back.from == 1 && back.to == 0 && back.index == 3 && back.count == 8 && back.ticket == g.ticket);
  buf[0] ^= 1;
  CHECK(!decodeHello(buf, back));
  uint8_t reply[kReplySize];
  encodeReply(kBadTicket, reply);
  uint32_t status = 0;
  CHECK(decodeReply(reply, status) && status == kBadTicket);
}

void testJudge() {
  GroupView g = group();
  bool wait = true;
  CHECK(judgeHello(helloFor(g), g, wait) == kHelloOk && !wait);
  Hello bad = helloFor(g);
  bad.ticket[15] ^= 1;
  CHECK(judgeHello(bad, g, wait) == kBadTicket);
  bad = helloFor(g, 3);  // out of range
  CHECK(judgeHello(bad, g, wait) == kBadIndex);
  bad = helloFor(g, 0);  // itself
  CHECK(judgeHello(bad, g, wait) == kBadIndex);
  bad = helloFor(g);
  bad.to = 2;  // meant for another member
  CHECK(judgeHello(bad, g, wait) == kBadIndex);
  bad = helloFor(g);
  bad.version = 1;
  CHECK(judgeHello(bad, g, wait) == kBadVersion);
  bad = helloFor(g);
  bad.epoch = 4;
  CHECK(judgeHello(bad, g, wait) == kStaleEpoch && !wait);
  bad.epoch = 6;
  judgeHello(bad, g, wait);
  CHECK(wait);
  GroupView broken = g;
  broken.broken = true;
  CHECK(judgeHello(helloFor(g), broken, wait) == kEpochBroken);
  // A stranger learns nothing from a broken group: the ticket is checked first.
  bad = helloFor(g);
  bad.ticket[0] ^= 1;
  CHECK(judgeHello(bad, broken, wait) == kBadTicket);
  GroupView closing = g;
  closing.closing = true;
  CHECK(judgeHello(helloFor(g), closing, wait) == kClosing);
}

void testIncomingByteByByte() {
  GroupView g = group();
  uint8_t buf[kHelloSize];
  encodeHello(helloFor(g), buf);
  IncomingHello in(1000);
  for (size_t i = 0; i < kHelloSize; ++i) {
    CHECK(in.state() == IncomingHello::State::Reading);
    CHECK(in.wanted() == kHelloSize - i);  // never more than the hello: no frame byte is read here
    *in.readPtr() = buf[i];
    in.received(1);
  }
  CHECK(in.state() == IncomingHello::State::Judging);
  CHECK(in.wanted() == 0);
  in.judge(g, 10, 20);
  CHECK(in.state() == IncomingHello::State::Replying && in.replyLeft() == kReplySize);
  uint32_t status = 99;
  CHECK(decodeReply(in.replyPtr(), status) && status == kHelloOk);
  in.sent(3);
  CHECK(in.state() == IncomingHello::State::Replying && in.replyLeft() == kReplySize - 3);
  in.sent(kReplySize - 3);
  CHECK(in.state() == IncomingHello::State::Admitted);
  CHECK(in.expired(1000) && !in.expired(999));
}

void testIncomingGarbageAndRefusal() {
  GroupView g = group();
  IncomingHello junk(1000);
  std::memset(junk.readPtr(), 'x', kHelloSize);
  junk.received(kHelloSize);
  CHECK(junk.state() == IncomingHello::State::Refused);  // no reply to garbage
  CHECK(junk.replyLeft() == 0 && !junk.replied());

  Hello h = helloFor(g);
  h.ticket[0] ^= 0xff;
  IncomingHello forged(1000);
  encodeHello(h, forged.readPtr());
  forged.received(kHelloSize);
  forged.judge(g, 0, 100);
  CHECK(forged.status() == kBadTicket);
  forged.sent(kReplySize);
  CHECK(forged.state() == IncomingHello::State::Refused && forged.replied());
}

void testIncomingWaitsForEpoch() {
  GroupView g = group();
  Hello h = helloFor(g);
  h.epoch = 6;
  IncomingHello in(1000);
  encodeHello(h, in.readPtr());
  in.received(kHelloSize);
  in.judge(g, 0, 50);  // dialler is one epoch ahead: wait until 50
  CHECK(in.state() == IncomingHello::State::Judging);
  CHECK(in.wakeAtMs() == 50);  // not the hello's deadline, which may pass while it waits
  in.judge(g, 40, 9999);  // the first bound stays
  CHECK(in.state() == IncomingHello::State::Judging);
  GroupView next = g;
  next.epoch = 6;
  in.judge(next, 45, 9999);
  CHECK(in.state() == IncomingHello::State::Replying && in.status() == kHelloOk);

  IncomingHello late(1000);
  encodeHello(h, late.readPtr());
  late.received(kHelloSize);
  late.judge(g, 0, 50);
  late.judge(g, 50, 50);
  CHECK(late.state() == IncomingHello::State::Replying && late.status() == kNotYet);
}

// A hello naming a future epoch (a dialler a moment ahead, or a stranger: the listener cannot tell, the future
// ticket is unknown to it) waits no longer than the hello's own deadline, and not at all past the cap on waiters.
void testEpochWaitBounded() {
  GroupView g = group();
  Hello h = helloFor(g);
  h.epoch = 1000;
  IncomingHello in(30);
  encodeHello(h, in.readPtr());
  in.received(kHelloSize);
  in.judge(g, 0, 2000);
  CHECK(in.waiting() && in.wakeAtMs() == 30);
  in.judge(g, 30, 2000);
  CHECK(in.state() == IncomingHello::State::Replying && in.status() == kNotYet);

  IncomingHello capped(1000);
  encodeHello(h, capped.readPtr());
  capped.received(kHelloSize);
  capped.judge(g, 0, 500, false);
  CHECK(!capped.waiting());
  CHECK(capped.state() == IncomingHello::State::Replying && capped.status() == kNotYet);
}

void testBudget() {
  Budget b(1000, 1500);
  const size_t o = Budget::kItemOverhead;
  CHECK(b.charge(1, 0));  // an empty frame still costs its overhead
  CHECK(b.used() == o && b.usedBy(1) == o);
  CHECK(b.charge(1, 1000 - 2 * o));
  CHECK(b.usedBy(1) == 1000);
  CHECK(!b.charge(1, 0));  // per-peer cap
  CHECK(b.charge(2, 300));
  CHECK(!b.charge(3, 1500 - b.used()));  // total cap (with the overhead it passes)
  CHECK(b.charge(3, 1500 - b.used() - o));
  CHECK(b.used() == 1500);
  b.release(1, 0);
  CHECK(b.usedBy(1) == 1000 - o && b.used() == 1500 - o);
  b.release(1, 1000 - 2 * o);
  CHECK(b.usedBy(1) == 0);
  b.release(7, 5);  // unknown peer: nothing
  b.reset();
  CHECK(b.used() == 0 && b.usedBy(2) == 0);
}

}  // namespace

int main() {
  testWire();
  testJudge();
  testIncomingByteByByte();
  testIncomingGarbageAndRefusal();
  testIncomingWaitsForEpoch();
  testEpochWaitBounded();
  testBudget();
  return TEST_MAIN_RESULT();
}
