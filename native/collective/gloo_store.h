// Gloo's rendezvous::Store over the TCP store, so gloo::rendezvous::Context::connectFullMesh can exchange the pairs'
// addresses through rank 0. Keys are prefixed (Gloo's own "0", "1", ... must not meet ours), and no call outlives the
// rendezvous deadline, whatever timeout Gloo passes.
#pragma once

#include <gloo/rendezvous/store.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "store_client.h"

namespace dalle_collective {

/** Gloo waited for keys that no rank set in time: which ones. */
struct KeysNotSet : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(StoreClient& client, std::string prefix, Deadline deadline, int pollMs)
      : client_(client), prefix_(std::move(prefix)), deadline_(deadline), pollMs_(pollMs) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  /** Waits for the key (as Gloo's FileStore does), then returns its value. */
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  Deadline until(std::chrono::milliseconds timeout) const;

  StoreClient& client_;
  std::string prefix_;
  Deadline deadline_;
  int pollMs_;
};

}  // namespace dalle_collective
