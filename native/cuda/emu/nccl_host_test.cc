// The NCCL backend's host logic on the CPU, driven by test/cuda/nccl-host.test.ts: the packing plan (nccl_plan.h) and
// the watchdog's state machine (nccl_watchdog.h), the same headers nccl.cc compiles. Reads commands from stdin, one per
// line, fields separated by tabs, and answers each with one JSON line:
//   plan     MAX  ADDRESS,COUNT;ADDRESS,COUNT;...        -> { error, total, inPlace, entries: [[index, offset, count]] }
//   tracker  TIMEOUT_MS                                  -> { ok }   (a fresh tracker)
//   add      NOW_MS  ID  WHAT                            -> { added, refusal }
//   poll     NOW_MS  ASYNC_ERROR|-  ID=done|pending|failed:DETAIL,...   -> a step (below), plus the ids probed in order
//   fail     KIND  ID  CAUSE                             -> a step
// A step: { completed: [ids], failed: [{ id, kind, what, cause, message }], abort, pending, broken, refusal }.
// An id the poll's list leaves out is probed as pending.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "../nccl_plan.h"
#include "../nccl_watchdog.h"

using namespace dalle::cuda::nccl;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.push_back("");
  return out;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string stepJson(const WatchdogStep& step, const OpTracker& t, const std::vector<uint64_t>* probed) {
  std::string out = "{\"completed\":[";
  for (size_t i = 0; i < step.completed.size(); i++) out += (i ? "," : "") + std::to_string(step.completed[i]);
  out += "],\"failed\":[";
  for (size_t i = 0; i < step.failed.size(); i++) {
    const OpFailure& f = step.failed[i];
    out += std::string(i ? "," : "") + "{\"id\":" + std::to_string(f.id) + ",\"kind\":" + quote(f.kind) +
           ",\"what\":" + quote(f.what) + ",\"cause\":" + quote(f.cause) + ",\"message\":" + quote(f.message()) + "}";
  }
  out += "],\"abort\":" + std::string(step.abort ? "true" : "false") + ",\"pending\":" + std::to_string(t.pending()) +
         ",\"broken\":" + (t.broken() ? "true" : "false") + ",\"refusal\":" + quote(t.broken() ? t.refusal() : "");
  if (probed) {
    out += ",\"probed\":[";
    for (size_t i = 0; i < probed->size(); i++) out += (i ? "," : "") + std::to_string((*probed)[i]);
    out += "]";
  }
  return out + "}";
}

}  // namespace

int main() {
  std::unique_ptr<OpTracker> tracker;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f = split(line, '\t');
    const std::string& cmd = f[0];
    if (cmd == "plan" && f.size() == 3) {
      std::vector<Span> spans;
      for (const std::string& pair : split(f[2], ';')) {
        if (pair.empty()) continue;
        std::vector<std::string> ac = split(pair, ',');
        spans.push_back({std::stoull(ac.at(0)), std::stoull(ac.at(1))});
      }
      PackPlan p = planPack(spans, std::stoull(f[1]));
      std::string out = "{\"error\":" + quote(p.error) + ",\"total\":" + std::to_string(p.total) +
                        ",\"inPlace\":" + (p.inPlace ? "true" : "false") + ",\"entries\":[";
      for (size_t i = 0; i < p.entries.size(); i++) {
        const PackEntry& e = p.entries[i];
        out += std::string(i ? "," : "") + "[" + std::to_string(e.index) + "," + std::to_string(e.offset) + "," +
               std::to_string(e.count) + "]";
      }
      std::cout << out << "]}\n";
    } else if (cmd == "tracker" && f.size() == 2) {
      tracker = std::make_unique<OpTracker>(std::stoll(f[1]));
      std::cout << "{\"ok\":true}\n";
    } else if (cmd == "add" && f.size() == 4 && tracker) {
      bool added = tracker->add(std::stoull(f[2]), f[3], std::stoll(f[1]));
      std::cout << "{\"added\":" << (added ? "true" : "false") << ",\"refusal\":" << quote(added ? "" : tracker->refusal())
                << "}\n";
    } else if (cmd == "poll" && f.size() >= 3 && tracker) {
      std::map<uint64_t, std::string> states;
      if (f.size() > 3) {
        for (const std::string& item : split(f[3], ',')) {
          size_t eq = item.find('=');
          if (eq == std::string::npos) continue;
          states[std::stoull(item.substr(0, eq))] = item.substr(eq + 1);
        }
      }
      std::vector<uint64_t> probed;
      auto probe = [&](uint64_t id, std::string* detail) {
        probed.push_back(id);
        const std::string& s = states[id];
        if (s == "done") return Probe::Done;
        if (s.rfind("failed:", 0) == 0) {
          *detail = s.substr(7);
          return Probe::Failed;
        }
        return Probe::Pending;
      };
      WatchdogStep step = tracker->poll(std::stoll(f[1]), probe, f[2] == "-" ? "" : f[2]);
      std::cout << stepJson(step, *tracker, &probed) << "\n";
    } else if (cmd == "fail" && f.size() == 4 && tracker) {
      WatchdogStep step = tracker->failAll(f[1], std::stoull(f[2]), f[3]);
      std::cout << stepJson(step, *tracker, nullptr) << "\n";
    } else {
      std::cout << "{\"bad\":" << quote(line) << "}\n";
    }
    std::cout.flush();
  }
  return 0;
}
