#include "gloo_store.h"

#include <thread>

namespace dalle_collective {

Deadline GlooStore::until(std::chrono::milliseconds timeout) const {
  Deadline d = Clock::now() + timeout;
  return d < deadline_ ? d : deadline_;
}

void GlooStore::set(const std::string& key, const std::vector<char>& data) { client_.set(prefix_ + key, data); }

std::vector<char> GlooStore::get(const std::string& key) {
  wait({key});
  auto value = client_.get(prefix_ + key);
  if (!value) throw KeysNotSet("the rendezvous key '" + key + "' vanished");
  return *value;
}

void GlooStore::wait(const std::vector<std::string>& keys) { wait(keys, std::chrono::milliseconds(msLeft(deadline_))); }

void GlooStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  std::vector<std::string> full;
  for (const std::string& k : keys) full.push_back(prefix_ + k);
  Deadline d = until(timeout);
  // Polling (every pollMs) keeps the server free of parked requests; the rendezvous happens once per run.
  for (;;) {
    std::vector<size_t> missing = client_.missing(full);
    if (missing.empty()) return;
    if (msLeft(d) <= 0) {
      std::string names;
      for (size_t i : missing) names += (names.empty() ? "'" : ", '") + keys[i] + "'";
      throw KeysNotSet("Gloo's rendezvous keys " + names + " were not set in time");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long long>(pollMs_, msLeft(d))));
  }
}

}  // namespace dalle_collective
