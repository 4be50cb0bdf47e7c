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

}  // namespace dalle_collective
