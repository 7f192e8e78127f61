// wanproxy: a user-space WAN emulator for TCCL benches and tests (Linux only).
//
// A TCP proxy that forwards connections from a listen address to a target address and, per direction, delays
// every byte by a one-way delay and caps the rate per TCP connection and per link (the aggregate of all
// connections that share a link). netem does not exist on the machines this runs on, so delay and per-flow
// limits come from here.
//
// Model, per direction of each proxied connection (a "pipe"):
//   bytes read from the source at time t become eligible at t + delay; eligible bytes are written to the
//   destination no faster than the connection's token bucket and the link's token bucket allow.
//   The proxy stops reading from the source while its queue holds more than rate x delay + slack bytes, so the
//   sender's TCP sees back-pressure as on a long fat pipe and memory stays bounded.
//
// One thread, epoll, level-triggered, a timerfd for the next deadline. Controlled by line commands on stdin,
// answered one line each on stdout, in order:
//   link ID DELAY_MS CONN_MBPS AGG_MBPS [SHARED...]
//                                                  define or update a directed link (0 Mbit/s = no cap); its
//                                                  bytes also draw on the named shared caps
//   shared ID MBPS                                 define or update a shared cap (e.g. one host's uplink,
//                                                  drawn on by all its outgoing links)
//   route ID LHOST LPORT THOST TPORT FWD REV       listen on LHOST:LPORT (0 = any), forward to THOST:TPORT;
//                                                  client->server bytes use link FWD, server->client link REV
//                                                  -> "ok route ID PORT"; TPORT 0 = the same port as PORT
//   via ID SRCHOST FWD REV                         connections to route ID from client address SRCHOST use
//                                                  links FWD and REV instead (per-pair links behind one
//                                                  address: a peer dialling from its own address)
//   unroute ID                                     close the listener and reset its connections
//   cut ID                                         reset every connection of route ID (keep listening)
//   stats                                          -> "stats {json}": CPU, links, routes, each open connection's bytes
//   ping                                           -> "ok ping"
//   quit (or end of stdin, or SIGTERM/SIGINT)      close everything and exit 0
// Errors answer "error MESSAGE".
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr size_t kBlock = 256 * 1024;          // read size and chunk size
constexpr size_t kSlack = 256 * 1024;          // queue slack above rate x delay
constexpr size_t kUncappedQueue = 4 << 20;     // queue limit when a pipe has no rate cap at all
constexpr int64_t kBurstNs = 2'000'000;        // token bucket depth, in time at the bucket's rate
constexpr double kMinBurst = 64.0 * 1024;      // ... but never less than one chunk

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Token bucket that may go into debt by one write: a write is allowed while tokens >= 0, then its size is
// subtracted. The long-run rate is exact; bursts are bounded by depth + one write.
struct Bucket {
  double rate = 0;  // bytes per second; 0 = unlimited
  double depth = 0;
  double tokens = 0;
  int64_t last = 0;

  void setRate(double bytesPerSec) {
    rate = bytesPerSec;
    depth = std::max(kMinBurst, rate * kBurstNs / 1e9);
    tokens = std::min(tokens, depth);
  }
  void refill(int64_t now) {
    if (rate <= 0) return;
    if (now > last) tokens = std::min(depth, tokens + rate * double(now - last) / 1e9);
    last = now;
  }
  bool ready() const { return rate <= 0 || tokens >= 0; }
  // Time at which tokens reach zero again.
  int64_t readyAt(int64_t now) const {
    if (ready()) return now;
    return now + int64_t(-tokens / rate * 1e9) + 1;
  }
  void consume(size_t n) {
    if (rate > 0) tokens -= double(n);
  }
};

struct Link {
  int id = 0;
  int64_t delayNs = 0;
  double connRate = 0;  // bytes/s per connection, 0 = none
  Bucket agg;
  std::vector<Bucket*> shared;  // caps shared with other links (host uplink / downlink)
  uint64_t bytes = 0;
  uint64_t connections = 0;
  uint64_t vclock = 0;  // 'served' of the last pipe that wrote on this link (fair queueing between connections)
};

struct Chunk {
  std::unique_ptr<char[]> buf;
  size_t off = 0, len = 0;
  int64_t ready = 0;
  bool eof = false;
};

struct Conn;
struct Route;

struct Pipe {
  Conn* conn = nullptr;
  int src = -1, dst = -1;
  Link* link = nullptr;
  Bucket bucket;
  std::deque<Chunk> q;
  size_t queued = 0;
  size_t limit = kUncappedQueue;
  bool srcEof = false;   // read side saw EOF (queued as an eof chunk)
  bool dstShut = false;  // eof delivered: shutdown(dst, SHUT_WR) done
  bool blocked = false;  // dst socket full: waiting for EPOLLOUT
  int64_t wakeAt = 0;    // next time service() has something to do (0 = none)
  uint64_t served = 0;   // bytes written, restarted from the link's clock after idling: least served goes first
  uint64_t total = 0;    // bytes written since the connection opened (stats)
};

struct FdRef {
  Conn* conn;
  int side;  // 0 = client fd, 1 = server fd; or -1 for a listener (route), -2 stdin, -3 timer, -4 signals
  Route* route;
};

struct Conn {
  Route* route = nullptr;
  int fd[2] = {-1, -1};
  uint32_t mask[2] = {0, 0};
  FdRef ref[2];
  bool connected = false;  // outbound connect done
  Pipe pipe[2];            // 0: client -> server (reads fd[0], writes fd[1]); 1: server -> client
  bool dead = false;
};

struct Route {
  int id = 0;
  int listenFd = -1;
  uint16_t port = 0;
  sockaddr_in target{};
  Link* fwd = nullptr;
  Link* rev = nullptr;
  // Client source address (network order) -> {fwd, rev} links, overriding the defaults above.
  std::map<uint32_t, std::pair<Link*, Link*>> bySource;
  FdRef ref{nullptr, -1, nullptr};
  uint64_t accepted = 0;
};

int ep = -1;
int timerFd = -1;
int64_t armedAt = -1;
bool running = true;
std::map<int, std::unique_ptr<Link>> links;
std::map<int, std::unique_ptr<Bucket>> sharedCaps;
std::map<int, std::unique_ptr<Route>> routes;
std::vector<Conn*> conns;  // live connections
std::string stdinBuf;
FdRef stdinRef{nullptr, -2, nullptr}, timerRef{nullptr, -3, nullptr}, sigRef{nullptr, -4, nullptr};
uint64_t totalAccepted = 0;

void reply(const std::string& line) {
  std::string s = line + "\n";
  const char* p = s.data();
  size_t n = s.size();
  while (n > 0) {
    ssize_t w = write(1, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      running = false;  // parent gone
      return;
    }
    p += w;
    n -= size_t(w);
  }
}

void setNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool parseAddr(const std::string& host, int port, sockaddr_in& out) {
  std::memset(&out, 0, sizeof out);
  out.sin_family = AF_INET;
  out.sin_port = htons(uint16_t(port));
  return inet_pton(AF_INET, host.c_str(), &out.sin_addr) == 1;
}

constexpr uint32_t kRemoved = ~0u;  // the fd is out of epoll: both of its directions are finished

void updateMask(Conn* c, int side, uint32_t want) {
  if (c->fd[side] < 0 || c->mask[side] == want || c->mask[side] == kRemoved) return;
  if (want == 0 && c->pipe[side].srcEof && c->pipe[1 - side].dstShut) {
    // Read EOF and write side shut: epoll would report EPOLLHUP on every wait. Nothing more to do with it.
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[side], nullptr);
    c->mask[side] = kRemoved;
    return;
  }
  epoll_event ev{};
  ev.events = want;
  ev.data.ptr = &c->ref[side];
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd[side], &ev);
  c->mask[side] = want;
}

// Recomputes what each fd of a connection waits for.
void refreshInterest(Conn* c) {
  if (c->dead) return;
  for (int side = 0; side < 2; ++side) {
    uint32_t want = 0;
    Pipe& out = c->pipe[side];     // reads fd[side]
    Pipe& in = c->pipe[1 - side];  // writes fd[side]
    bool canRead = side == 0 || c->connected;
    if (canRead && !out.srcEof && out.queued < out.limit) want |= EPOLLIN;
    if (side == 1 && !c->connected) want |= EPOLLOUT;  // connect completion
    if (in.blocked) want |= EPOLLOUT;
    updateMask(c, side, want);
  }
}

void resetFd(int fd) {
  if (fd < 0) return;
  linger l{1, 0};  // close with RST, as a failed peer would look to the other side
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
}

void killConn(Conn* c, bool abortive) {
  if (c->dead) return;
  c->dead = true;
  for (int side = 0; side < 2; ++side) {
    if (c->fd[side] < 0) continue;
    if (abortive) {
      resetFd(c->fd[side]);
    } else {
      epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[side], nullptr);
      close(c->fd[side]);
    }
    c->fd[side] = -1;
  }
}

void sizePipe(Pipe& p) {
  double rate = p.bucket.rate;
  if (p.link->agg.rate > 0 && (rate <= 0 || p.link->agg.rate < rate)) rate = p.link->agg.rate;
  for (Bucket* b : p.link->shared)
    if (b->rate > 0 && (rate <= 0 || b->rate < rate)) rate = b->rate;
  if (rate <= 0) {
    p.limit = kUncappedQueue;
  } else {
    p.limit = size_t(rate * double(p.link->delayNs) / 1e9) + kSlack;
  }
}

// Writes what is due from a pipe's queue; sets wakeAt to the next time it has work.
void service(Pipe& p, int64_t now) {
  Conn* c = p.conn;
  p.wakeAt = 0;
  if (c->dead || !c->connected || p.blocked) return;
  while (!p.q.empty()) {
    Chunk& ch = p.q.front();
    if (ch.ready > now) {
      p.wakeAt = ch.ready;
      return;
    }
    if (ch.eof) {
      shutdown(p.dst, SHUT_WR);
      p.dstShut = true;
      p.q.pop_front();
      continue;
    }
    p.bucket.refill(now);
    p.link->agg.refill(now);
    bool ok = p.bucket.ready() && p.link->agg.ready();
    for (Bucket* b : p.link->shared) {
      b->refill(now);
      ok = ok && b->ready();
    }
    if (!ok) {
      int64_t at = std::max(p.bucket.readyAt(now), p.link->agg.readyAt(now));
      for (Bucket* b : p.link->shared) at = std::max(at, b->readyAt(now));
      p.wakeAt = at;
      return;
    }
    ssize_t w = send(p.dst, ch.buf.get() + ch.off, ch.len - ch.off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        p.blocked = true;
        return;
      }
      if (errno == EINTR) continue;
      killConn(c, true);
      return;
    }
    p.bucket.consume(size_t(w));
    p.link->agg.consume(size_t(w));
    for (Bucket* b : p.link->shared) b->consume(size_t(w));
    p.link->bytes += uint64_t(w);
    p.served += uint64_t(w);
    p.total += uint64_t(w);
    p.link->vclock = p.served;
    ch.off += size_t(w);
    p.queued -= size_t(w);
    if (ch.off == ch.len) p.q.pop_front();
  }
}

// Reads what the queue limit allows from a pipe's source.
void pump(Pipe& p, int64_t now) {
  Conn* c = p.conn;
  while (!c->dead && !p.srcEof && p.queued < p.limit) {
    Chunk ch;
    ch.buf.reset(new char[kBlock]);
    ssize_t n = recv(p.src, ch.buf.get(), kBlock, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      killConn(c, true);  // reset by the source: reset the other side too
      return;
    }
    ch.ready = now + p.link->delayNs;
    if (n == 0) {
      p.srcEof = true;
      ch.buf.reset();
      ch.eof = true;
      p.q.push_back(std::move(ch));
      return;
    }
    ch.len = size_t(n);
    if (p.queued == 0) p.served = std::max(p.served, p.link->vclock);  // was idle: no credit for the idle time
    if (ch.len < kBlock / 8) {  // small message: do not pin a whole block for it
      std::unique_ptr<char[]> small(new char[ch.len]);
      std::memcpy(small.get(), ch.buf.get(), ch.len);
      ch.buf = std::move(small);
    }
    p.queued += ch.len;
    p.q.push_back(std::move(ch));
    if (size_t(n) < kBlock) return;  // drained the socket for now
  }
}

bool finished(Conn* c) {
  return c->pipe[0].dstShut && c->pipe[1].dstShut && c->pipe[0].q.empty() && c->pipe[1].q.empty();
}

void onAccept(Route* r) {
  for (;;) {
    sockaddr_in from{};
    socklen_t fromLen = sizeof from;
    int cfd = accept4(r->listenFd, reinterpret_cast<sockaddr*>(&from), &fromLen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) return;
    auto via = r->bySource.find(from.sin_addr.s_addr);
    Link* fwdLink = via != r->bySource.end() ? via->second.first : r->fwd;
    Link* revLink = via != r->bySource.end() ? via->second.second : r->rev;
    int sfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sfd < 0) {
      resetFd(cfd);
      continue;
    }
    setNoDelay(cfd);
    setNoDelay(sfd);
    int rc = connect(sfd, reinterpret_cast<sockaddr*>(&r->target), sizeof r->target);
    if (rc < 0 && errno != EINPROGRESS) {
      close(sfd);
      resetFd(cfd);
      continue;
    }
    auto* c = new Conn();
    c->route = r;
    c->fd[0] = cfd;
    c->fd[1] = sfd;
    c->connected = rc == 0;
    for (int side = 0; side < 2; ++side) {
      c->ref[side] = FdRef{c, side, r};
      Pipe& p = c->pipe[side];
      p.conn = c;
      p.src = c->fd[side];
      p.dst = c->fd[1 - side];
      p.link = side == 0 ? fwdLink : revLink;
      p.link->connections++;
      p.bucket.setRate(p.link->connRate);
      p.bucket.tokens = p.bucket.depth;
      p.bucket.last = nowNs();
      sizePipe(p);
      epoll_event ev{};
      ev.events = 0;
      ev.data.ptr = &c->ref[side];
      epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[side], &ev);
    }
    conns.push_back(c);
    r->accepted++;
    totalAccepted++;
    refreshInterest(c);
  }
}

void onConnEvent(Conn* c, int side, uint32_t events, int64_t now) {
  if (c->dead) return;
  if ((events & EPOLLERR) && (side == 0 || c->connected)) {
    killConn(c, true);  // reset or error on one side: the other side sees a reset too
    return;
  }
  if (side == 1 && !c->connected) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      killConn(c, true);
      return;
    }
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    c->connected = true;
  }
  if (events & EPOLLOUT) c->pipe[1 - side].blocked = false;  // fd[side] is the destination of the other pipe
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) pump(c->pipe[side], now);
}

void closeRouteConns(Route* r) {
  for (Conn* c : conns)
    if (c->route == r) killConn(c, true);
}

std::string statsJson() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::ostringstream o;
  o << "{\"utimeMs\":" << (ru.ru_utime.tv_sec * 1000.0 + ru.ru_utime.tv_usec / 1000.0)
    << ",\"stimeMs\":" << (ru.ru_stime.tv_sec * 1000.0 + ru.ru_stime.tv_usec / 1000.0)
    << ",\"maxRssKb\":" << ru.ru_maxrss << ",\"accepted\":" << totalAccepted << ",\"open\":" << conns.size()
    << ",\"links\":{";
  bool first = true;
  for (auto& [id, l] : links) {
    o << (first ? "" : ",") << "\"" << id << "\":{\"bytes\":" << l->bytes << ",\"connections\":" << l->connections
      << "}";
    first = false;
  }
  o << "},\"routes\":{";
  first = true;
  for (auto& [id, r] : routes) {
    size_t open = 0;
    for (Conn* c : conns) open += c->route == r.get() && !c->dead;
    o << (first ? "" : ",") << "\"" << id << "\":{\"port\":" << r->port << ",\"accepted\":" << r->accepted
      << ",\"open\":" << open << "}";
    first = false;
  }
  size_t queued = 0;
  for (Conn* c : conns) queued += c->pipe[0].queued + c->pipe[1].queued;
  o << "},\"queuedBytes\":" << queued << ",\"connections\":[";
  first = true;
  for (Conn* c : conns) {
    if (c->dead || !c->route) continue;
    o << (first ? "" : ",") << "[" << c->route->id << "," << c->pipe[0].total << "]";
    first = false;
  }
  o << "]}";
  return o.str();
}

void command(const std::string& line) {
  std::istringstream in(line);
  std::string cmd;
  in >> cmd;
  if (cmd.empty()) return;
  if (cmd == "ping") {
    reply("ok ping");
  } else if (cmd == "quit") {
    running = false;
    reply("ok quit");
  } else if (cmd == "stats") {
    reply("stats " + statsJson());
  } else if (cmd == "link") {
    int id;
    double delayMs, connMbps, aggMbps;
    if (!(in >> id >> delayMs >> connMbps >> aggMbps) || delayMs < 0 || connMbps < 0 || aggMbps < 0) {
      reply("error usage: link ID DELAY_MS CONN_MBPS AGG_MBPS");
      return;
    }
    std::vector<Bucket*> shared;
    int sid;
    while (in >> sid) {
      auto it = sharedCaps.find(sid);
      if (it == sharedCaps.end()) {
        reply("error link " + std::to_string(id) + ": unknown shared cap " + std::to_string(sid));
        return;
      }
      shared.push_back(it->second.get());
    }
    auto& l = links[id];
    if (!l) {
      l = std::make_unique<Link>();
      l->id = id;
      l->agg.last = nowNs();
    }
    l->delayNs = int64_t(delayMs * 1e6);
    l->connRate = connMbps * 1e6 / 8;
    l->agg.setRate(aggMbps * 1e6 / 8);
    l->shared = shared;
    for (Conn* c : conns)
      for (Pipe& p : c->pipe)
        if (p.link == l.get()) {
          p.bucket.setRate(l->connRate);
          sizePipe(p);
        }
    reply("ok link " + std::to_string(id));
  } else if (cmd == "shared") {
    int id;
    double mbps;
    if (!(in >> id >> mbps) || mbps < 0) {
      reply("error usage: shared ID MBPS");
      return;
    }
    auto& b = sharedCaps[id];
    if (!b) {
      b = std::make_unique<Bucket>();
      b->last = nowNs();
    }
    b->setRate(mbps * 1e6 / 8);
    for (Conn* c : conns)
      for (Pipe& p : c->pipe) sizePipe(p);
    reply("ok shared " + std::to_string(id));
  } else if (cmd == "route") {
    int id, lport, tport, fwd, rev;
    std::string lhost, thost;
    if (!(in >> id >> lhost >> lport >> thost >> tport >> fwd >> rev)) {
      reply("error usage: route ID LHOST LPORT THOST TPORT FWD_LINK REV_LINK");
      return;
    }
    if (routes.count(id)) {
      reply("error route " + std::to_string(id) + " exists");
      return;
    }
    if (!links.count(fwd) || !links.count(rev)) {
      reply("error route " + std::to_string(id) + ": unknown link");
      return;
    }
    auto r = std::make_unique<Route>();
    r->id = id;
    r->fwd = links[fwd].get();
    r->rev = links[rev].get();
    sockaddr_in la;
    if (!parseAddr(lhost, lport, la) || !parseAddr(thost, tport, r->target)) {
      reply("error route " + std::to_string(id) + ": bad address");
      return;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, reinterpret_cast<sockaddr*>(&la), sizeof la) < 0 || listen(fd, 512) < 0) {
      std::string msg = std::strerror(errno);
      close(fd);
      reply("error route " + std::to_string(id) + ": " + lhost + ":" + std::to_string(lport) + ": " + msg);
      return;
    }
    socklen_t len = sizeof la;
    getsockname(fd, reinterpret_cast<sockaddr*>(&la), &len);
    r->listenFd = fd;
    r->port = ntohs(la.sin_port);
    if (tport == 0) r->target.sin_port = htons(r->port);  // target port 0: the same port as the listener's
    r->ref = FdRef{nullptr, -1, r.get()};
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &r->ref;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    reply("ok route " + std::to_string(id) + " " + std::to_string(r->port));
    routes[id] = std::move(r);
  } else if (cmd == "via") {
    int id, fwd, rev;
    std::string src;
    if (!(in >> id >> src >> fwd >> rev)) {
      reply("error usage: via ID SRCHOST FWD_LINK REV_LINK");
      return;
    }
    sockaddr_in sa;
    if (!routes.count(id) || !links.count(fwd) || !links.count(rev) || !parseAddr(src, 0, sa)) {
      reply("error via " + std::to_string(id) + ": unknown route or link, or a bad address");
      return;
    }
    routes[id]->bySource[sa.sin_addr.s_addr] = {links[fwd].get(), links[rev].get()};
    reply("ok via " + std::to_string(id));
  } else if (cmd == "unroute" || cmd == "cut") {
    int id;
    if (!(in >> id) || !routes.count(id)) {
      reply("error unknown route");
      return;
    }
    Route* r = routes[id].get();
    closeRouteConns(r);
    if (cmd == "unroute") {
      epoll_ctl(ep, EPOLL_CTL_DEL, r->listenFd, nullptr);
      close(r->listenFd);
      routes.erase(id);
    }
    reply("ok " + cmd + " " + std::to_string(id));
  } else {
    reply("error unknown command " + cmd);
  }
}

void onStdin() {
  char buf[4096];
  ssize_t n = read(0, buf, sizeof buf);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    running = false;  // parent closed our stdin: exit
    return;
  }
  stdinBuf.append(buf, size_t(n));
  size_t pos;
  while ((pos = stdinBuf.find('\n')) != std::string::npos) {
    std::string line = stdinBuf.substr(0, pos);
    stdinBuf.erase(0, pos + 1);
    command(line);
  }
}

void armTimer(int64_t at) {
  if (at == armedAt) return;
  armedAt = at;
  itimerspec its{};
  if (at > 0) {
    its.it_value.tv_sec = at / 1'000'000'000;
    its.it_value.tv_nsec = at % 1'000'000'000;
  }
  timerfd_settime(timerFd, TFD_TIMER_ABSTIME, &its, nullptr);
}

}  // namespace

int main() {
  signal(SIGPIPE, SIG_IGN);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigprocmask(SIG_BLOCK, &sigs, nullptr);
  int sigFd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);

  ep = epoll_create1(EPOLL_CLOEXEC);
  timerFd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  setNonBlocking(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &stdinRef;
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  ev.data.ptr = &timerRef;
  epoll_ctl(ep, EPOLL_CTL_ADD, timerFd, &ev);
  ev.data.ptr = &sigRef;
  epoll_ctl(ep, EPOLL_CTL_ADD, sigFd, &ev);
  reply("ready");

  std::vector<epoll_event> events(256);
  std::vector<Pipe*> cands;
  while (running) {
    int n = epoll_wait(ep, events.data(), int(events.size()), -1);
    if (n < 0 && errno != EINTR) break;
    int64_t now = nowNs();
    for (int i = 0; i < n; ++i) {
      auto* ref = static_cast<FdRef*>(events[i].data.ptr);
      if (ref->side == -2) {
        onStdin();
      } else if (ref->side == -3) {
        uint64_t x;
        while (read(timerFd, &x, sizeof x) > 0) {
        }
        armedAt = -1;
      } else if (ref->side == -4) {
        signalfd_siginfo si;
        while (read(sigFd, &si, sizeof si) > 0) {
        }
        running = false;
      } else if (ref->side == -1) {
        onAccept(ref->route);
      } else {
        onConnEvent(ref->conn, ref->side, events[i].events, now);
      }
    }
    // Write what is due, least-served pipe first so that connections sharing a link get even shares; then read
    // what the queue limits allow again; then find the next deadline.
    cands.clear();
    for (Conn* c : conns) {
      if (c->dead || !c->connected) continue;
      for (Pipe& p : c->pipe)
        if (!p.q.empty() && !p.blocked) cands.push_back(&p);
    }
    std::sort(cands.begin(), cands.end(), [](const Pipe* a, const Pipe* b) { return a->served < b->served; });
    for (Pipe* p : cands) service(*p, now);
    int64_t next = 0;
    for (Conn* c : conns) {
      if (c->dead) continue;
      for (Pipe& p : c->pipe) {
        if (!c->dead && c->connected && !p.srcEof && p.queued < p.limit) pump(p, now);
      }
      for (Pipe& p : c->pipe) {
        if (!p.q.empty() && !p.blocked && c->connected && !c->dead) {
          if (p.wakeAt == 0) service(p, now);
          if (p.wakeAt > 0 && (next == 0 || p.wakeAt < next)) next = p.wakeAt;
        }
      }
      if (!c->dead && finished(c)) killConn(c, false);
      refreshInterest(c);
    }
    // Reap dead connections.
    size_t w = 0;
    for (size_t k = 0; k < conns.size(); ++k) {
      if (conns[k]->dead) {
        for (Pipe& p : conns[k]->pipe)
          if (p.link && p.link->connections > 0) p.link->connections--;
        delete conns[k];
      } else {
        conns[w++] = conns[k];
      }
    }
    conns.resize(w);
    armTimer(next);
  }
  for (Conn* c : conns) {
    killConn(c, false);
    delete c;
  }
  for (auto& [id, r] : routes) close(r->listenFd);
  return 0;
}
