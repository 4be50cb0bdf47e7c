#include "liveness.h"

#include <algorithm>
#include <cstdio>
#include <thread>

namespace dalle_collective {

std::string seconds(long long ms) {
  char buf[32];
  if (ms < 10000) std::snprintf(buf, sizeof buf, "%.1f s", ms / 1000.0);
  else std::snprintf(buf, sizeof buf, "%lld s", (ms + 500) / 1000);
  return buf;
}

namespace {

std::string who(int rank, const RankStatus& s) {
  return "rank " + std::to_string(rank) + " (host " + s.host + ", pid " + std::to_string(s.pid) + ")";
}

std::string joinRanks(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size(); i++) {
    if (i > 0) out += i + 1 == ranks.size() ? " and " : ", ";
    out += std::to_string(ranks[i]);
  }
  return out;
}

std::string failedOp(const DiagnoseRequest& req) {
  return req.what + " failed" + (req.cause.empty() ? "" : " (" + req.cause + ")");
}

// The fault in one status snapshot, or kind "" when every other rank looks healthy (yet). A rank that reported a
// failure of its own is a victim: it may have exited or gone quiet since, which is not the cause.
Fault classify(const std::vector<RankStatus>& status, const DiagnoseRequest& req, bool final) {
  Fault f;
  std::vector<int> lost, left, never;
  int silent = -1, reporter = -1;
  for (int r = 0; r < static_cast<int>(status.size()); r++) {
    if (r == req.selfRank) continue;
    const RankStatus& s = status[r];
    if (s.report) {
      if (reporter < 0 || (status[reporter].report->blamed < 0 && s.report->blamed >= 0)) reporter = r;
      continue;
    }
    if (s.state == RankState::Lost) lost.push_back(r);
    else if (s.state == RankState::Left) left.push_back(r);
    else if (s.state == RankState::NeverJoined) never.push_back(r);
    else if (static_cast<int>(s.ageMs) > req.silentAfterMs && (silent < 0 || s.ageMs > status[silent].ageMs)) silent = r;
  }
  if (!lost.empty()) {
    f.kind = "exited";
    f.rank = lost[0];
    std::string names;
    for (size_t i = 0; i < lost.size(); i++) names += (i ? ", " : "") + who(lost[i], status[lost[i]]);
    f.message = names + " exited: " + failedOp(req);
  } else if (silent >= 0) {
    f.kind = "silent";
    f.rank = silent;
    f.message = who(silent, status[silent]) + " stopped answering: no heartbeat for " + seconds(status[silent].ageMs) +
                ": " + failedOp(req);
  } else if (!never.empty() && (req.rendezvous || final)) {
    f.kind = "never-joined";
    f.rank = never[0];
    f.message = std::string(never.size() > 1 ? "ranks " : "rank ") + joinRanks(never) + " never joined within " +
                seconds(req.timeoutMs) + " (world size " + std::to_string(req.worldSize) + "): " + failedOp(req);
  } else if (!left.empty()) {
    f.kind = "left";
    f.rank = left[0];
    f.message = who(left[0], status[left[0]]) + " left the group (it closed its collective): " + failedOp(req);
  } else if (reporter >= 0 && (status[reporter].report->blamed >= 0 || final)) {
    // Another rank failed first and found the cause (or found none either): its finding, not "rank k left".
    const FaultReport& rep = *status[reporter].report;
    f.kind = rep.kind;
    f.rank = rep.blamed;
    f.message = rep.message + " [found by rank " + std::to_string(reporter) + "; on this rank " + failedOp(req) + "]";
  }
  return f;
}

}  // namespace

Fault diagnose(StoreClient& store, const DiagnoseRequest& req) {
  Deadline until = deadlineIn(req.silentAfterMs + 500);
  for (;;) {
    std::vector<RankStatus> status;
    try {
      status = store.status();
    } catch (const std::exception& e) {
      Fault f;
      f.kind = "store-gone";
      f.rank = 0;
      f.message = "rank 0 is gone: its store at " + store.endpoint() + " does not answer (" + e.what() +
                  "); rank 0 exited, was stopped, or its machine is unreachable: " + failedOp(req);
      return f;
    }
    bool final = msLeft(until) <= 0;
    Fault f = classify(status, req, final);
    if (!f.kind.empty()) return f;
    if (final) {
      f.kind = "unknown";
      f.message = failedOp(req) + "; every rank is alive and answering the store, so one is behind or issued a " +
                  "different operation (every rank must issue the same collectives in the same order)";
      return f;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(req.pollMs));
  }
}

void reportFault(StoreClient& store, const Fault& f) {
  if (f.kind == "store-gone" || f.kind == "usage") return;
  try {
    store.report({f.rank, f.kind, f.message});
  } catch (const std::exception&) {
    // the store is gone too: the others will find that out themselves
  }
}

void awaitOthersFailing(StoreClient& store, int timeoutMs, int silentAfterMs, int pollMs) {
  Deadline until = deadlineIn(std::min(timeoutMs, 2 * silentAfterMs + 2000));
  try {
    while (msLeft(until) > 0) {
      std::vector<RankStatus> status = store.status();
      bool waiting = false;
      for (int r = 1; r < static_cast<int>(status.size()); r++) {
        const RankStatus& s = status[r];
        waiting = waiting || (s.state == RankState::Connected && !s.report && static_cast<int>(s.ageMs) <= silentAfterMs);
      }
      if (!waiting) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(pollMs));
    }
  } catch (const std::exception&) {
    // the store is this process's own: it does not go away
  }
}

void awaitOthersLeaving(StoreClient& store, int timeoutMs, int pollMs) {
  Deadline until = deadlineIn(std::min(timeoutMs, 10000));
  try {
    while (msLeft(until) > 0) {
      std::vector<RankStatus> status = store.status();
      bool others = false;
      for (int r = 1; r < static_cast<int>(status.size()); r++) others = others || status[r].state == RankState::Connected;
      if (!others) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(pollMs));
    }
  } catch (const std::exception&) {
    // the store is gone already: nothing to wait for
  }
}

}  // namespace dalle_collective
