// Naming the rank at fault when an operation fails: the store's record of every rank (how its connection ended, its
// last heartbeat) turns "Gloo: connection reset" or "timed out" into "rank 2 (host h, pid p) exited" or "rank 1
// stopped answering: no heartbeat for 12 s". A store that does not answer means rank 0, which serves it, is gone.
#pragma once

#include <string>

#include "store_client.h"

namespace dalle_collective {

struct Fault {
  // exited | left | silent | never-joined | store-gone | unknown | closed | usage
  std::string kind;
  std::string message;
  int rank = -1;  // -1: not known
};

struct DiagnoseRequest {
  int selfRank = 0;
  int worldSize = 1;
  /** A rank whose last heartbeat is older than this is reported as stopped. */
  int silentAfterMs = 3000;
  /** The operation that failed ("allReduce #4 (sum, 7 f32)") and why, in Gloo's words. */
  std::string what;
  std::string cause;
  /** The group never formed: ranks that never joined are the likely cause. */
  bool rendezvous = false;
  int timeoutMs = 0;
  /** Between two status requests. */
  int pollMs = 100;
};

/**
 * Asks the store which rank left or went silent, for up to silentAfterMs + 0.5 s (a rank killed a moment ago may not
 * be recorded yet, a stopped one not be silent long enough yet), and words the fault.
 */
Fault diagnose(StoreClient& store, const DiagnoseRequest& req);

std::string seconds(long long ms);

/** Tells the store this rank's finding, so the others name the same culprit; not a store-gone or usage fault. */
void reportFault(StoreClient& store, const Fault& f);

/**
 * Rank 0, on a failure: its process usually exits on it, and the store with it; a rank that has not failed yet would
 * then find no store and blame rank 0. So rank 0 holds the failure back (at most min(timeoutMs, 2 x silentAfterMs +
 * 2 s)) until every other rank has failed too (reported), left, or gone silent.
 */
void awaitOthersFailing(StoreClient& store, int timeoutMs, int silentAfterMs, int pollMs);

/**
 * Rank 0, leaving a healthy group: it serves the store, so it stays (at most min(timeoutMs, 10 s)) until the others
 * have left, so that a rank finishing its last operation a moment later does not find the store gone and report
 * rank 0 as dead.
 */
void awaitOthersLeaving(StoreClient& store, int timeoutMs, int pollMs);

}  // namespace dalle_collective
