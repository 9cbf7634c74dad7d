#include "planner/plan/trace.h"

#include <nlohmann/json.hpp>

namespace alpa {

std::string trace_events_json(const std::vector<TraceTrack>& tracks, const std::vector<TraceEvent>& events) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const TraceTrack& t : tracks) {
    out.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 0}, {"tid", t.id}, {"args", {{"name", t.name}}}});
  }
  for (const TraceEvent& e : events) {
    out.push_back({{"name", e.name}, {"cat", e.category}, {"ph", "X"}, {"pid", 0}, {"tid", e.track}, {"ts", e.start_us},
                   {"dur", e.duration_us}});
  }
  return out.dump();
}

std::string trace_document(const std::vector<std::string>& parts) {
  nlohmann::ordered_json events = nlohmann::ordered_json::array();
  for (const std::string& part : parts) {
    for (auto& e : nlohmann::ordered_json::parse(part)) events.push_back(std::move(e));
  }
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[";
  for (size_t i = 0; i < events.size(); ++i) out += (i ? ",\n" : "\n") + events[i].dump();
  return out + "\n]}\n";
}

}  // namespace alpa
