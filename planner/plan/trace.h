// Chrome trace files (open in https://ui.perfetto.dev or chrome://tracing): one named track per
// pipeline stage or rank, complete ("X") events on them. The one writer of the format: the
// predicted timeline (`alpa-plan search --trace`) and the measured one (`alpa-run --trace`).
#pragma once

#include <string>
#include <vector>

namespace alpa {

struct TraceEvent {
  std::string name, category;
  int track = 0;
  double start_us = 0, duration_us = 0;
};

struct TraceTrack {
  int id = 0;
  std::string name;
};

// One part of a trace (some tracks and their events) as a JSON array of trace events, which
// trace_document joins: ranks write their own parts and one rank writes the file.
std::string trace_events_json(const std::vector<TraceTrack>& tracks, const std::vector<TraceEvent>& events);
// The whole trace file from parts written by trace_events_json, in order.
std::string trace_document(const std::vector<std::string>& parts);

}  // namespace alpa
