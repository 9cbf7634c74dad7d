// alpa-plan: the offline planner's command line. Argument handling only; the work is in planner/.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <iostream>

#include <unistd.h>

#include <chrono>
#include <thread>
#include <optional>
#include <fstream>
#include <sstream>

#include "executor/backend/kernels.h"
#include "executor/comm/mpi_communicator.h"
#include "executor/profiler/profiler.h"
#include "planner/cluster/cluster.h"
#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/cost/profile.h"
#include "planner/graph/op_cost.h"
#include "planner/inter_op/pipeline.h"
#include "planner/intra_op/search.h"
#include "planner/spmd/plan_check.h"
#include "planner/plan/plan.h"
#include "planner/inspect/inspect.h"
#include "planner/onnx/import.h"

namespace {

struct ModelFlags {
  std::string model;
  int64_t batch = 0;
  std::vector<std::string> batch_dims;
  std::string trainable, frozen;
};

void add_model_flags(CLI::App* cmd, ModelFlags& f) {
  cmd->add_option("model", f.model, "ONNX model file (as written by torch.onnx.export)")->required();
  cmd->add_option("--batch", f.batch, "global batch size; binds the symbolic batch dim")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch-dim", f.batch_dims,
                  "NAME:AXIS — the batch axis of input NAME (default: axis 0 of every input)");
  cmd->add_option("--trainable", f.trainable, "regex: floating initializers forced trainable");
  cmd->add_option("--frozen", f.frozen, "regex: floating initializers forced frozen (buffers)");
}

alpa::ImportedModel load(const ModelFlags& f) {
  alpa::ImportOptions options;
  if (f.batch > 0) options.batch = f.batch;
  for (const auto& spec : f.batch_dims) options.batch_dims.push_back(alpa::parse_batch_dim(spec));
  options.trainable_regex = f.trainable;
  options.frozen_regex = f.frozen;
  return alpa::import_onnx_file(f.model, options);
}

struct SearchFlags {
  ModelFlags model;
  std::string cluster;
  int64_t microbatches = 0;  // 0: 1 for single-stage methods, searched for pipelines
  std::string optimizer = "adam";
  std::string precision;
  std::string method = "auto";
  int layers = 0;
  std::string remat = "auto";
  std::string schedule = "1f1b";
  int64_t tp = 0, pp = 0, dp = 0;
  double time_budget = 0;
  int explain = 0;
  std::string logical_mesh;
  int64_t memory_budget = 0;
  double time_limit = 120;
  int threads = 0;
  std::string profile;
  bool ilp_stats = false;
  bool no_decompose = false;
  std::string output;
  std::string trace;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw alpa::UserError(path, "file", "cannot be read");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  // Written to a temporary name and renamed, so a failed run never leaves half a plan.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw alpa::UserError(path, "output", "cannot be written");
    out << text;
    if (!out) throw alpa::UserError(path, "output", "write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw alpa::UserError(path, "output", "cannot be renamed into place");
}

// Loads a measured profile and checks it was taken on this cluster's kind of device.
std::optional<alpa::Profile> load_profile(const std::string& path, const alpa::Cluster& cluster, std::string& text) {
  if (path.empty()) return std::nullopt;
  text = read_file(path);
  alpa::Profile p = alpa::parse_profile(text, path);
  if (p.device_kind != cluster.device.kind) {
    throw alpa::UserError(path, "device_kind", "\"" + p.device_kind + "\" was measured on another device than the cluster's \"" +
                          cluster.device.kind + "\"");
  }
  return p;
}

alpa::OptimizerConfig parse_optimizer(const std::string& name) {
  if (auto opt = alpa::optimizer_from_name(name)) return *opt;
  throw alpa::UserError("--optimizer", name, "unknown optimizer (sgd, sgd-momentum, adam or adamw)");
}

alpa::PrecisionConfig parse_precision(const std::string& name, const alpa::Cluster& cluster) {
  alpa::PrecisionConfig p;
  std::string n = name;
  if (n.empty()) n = cluster.device.peak_flops_fp16 > cluster.device.peak_flops_fp32 ? "fp16" : "fp32";
  if (n == "fp16") p.compute = alpa::DType::kFloat16;
  else if (n == "bf16") p.compute = alpa::DType::kBFloat16;
  else if (n != "fp32") throw alpa::UserError("--precision", name, "unknown precision (fp32, fp16 or bf16)");
  return p;
}

std::string seconds(double s) {
  char buf[64];
  if (s >= 1) std::snprintf(buf, sizeof buf, "%.3f s", s);
  else if (s >= 1e-3) std::snprintf(buf, sizeof buf, "%.3f ms", s * 1e3);
  else std::snprintf(buf, sizeof buf, "%.3f us", s * 1e6);
  return buf;
}

std::string estimate_text(const alpa::PlanEstimate& e) {
  std::string out;
  out += "  iteration time      " + seconds(e.iteration_time_s) + "  (compute " + seconds(e.compute_time_s) +
         ", communication " + seconds(e.communication_time_s) + ")\n";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", e.throughput_samples_per_s);
  out += std::string("  throughput          ") + buf + " samples/s\n";
  out += "  communication/dev   ";
  bool first = true;
  for (const auto& [kind, bytes] : e.communication_bytes) {
    if (bytes <= 0) continue;
    out += (first ? "" : ", ") + kind + " " + alpa::format_bytes(bytes);
    first = false;
  }
  out += first ? "none\n" : "\n";
  out += "  memory/dev          peak " + alpa::format_bytes(static_cast<double>(e.memory.peak_bytes)) +
         " (parameters " + alpa::format_bytes(static_cast<double>(e.memory.parameter_bytes)) +
         ", gradients " + alpa::format_bytes(static_cast<double>(e.memory.gradient_bytes)) +
         ", optimizer state " + alpa::format_bytes(static_cast<double>(e.memory.optimizer_state_bytes)) +
         ", activations " + alpa::format_bytes(static_cast<double>(e.memory.activation_bytes)) + ")\n";
  return out;
}

// The model's file name, as plans record it.
std::string file_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// "NAME:HOSTS" for built-ins and cluster files, "local:N" for local ranks (what `cost` reloads).
std::string cluster_label(const alpa::Cluster& cluster, const std::string& spec) {
  return cluster.name + ":" + std::to_string(spec.rfind("local:", 0) == 0 ? cluster.num_devices() : cluster.hosts);
}

bool is_pipeline_method(const std::string& m) {
  return m == "auto" || m == "megatron" || m == "megatron-grid" || m == "pp-dp";
}

std::string mesh_text(int64_t a, int64_t b) { return std::to_string(a) + "x" + std::to_string(b); }

// The peak memory per device a single-stage plan promises: what its rank programs hold as
// alpa-run allocates (RankCheck::peak_bytes), the buffers the lowering inserts included, which
// the search's own model (the budget it keeps) does not see. A plan over its budget by them is
// still written, with a warning.
void set_program_peak(alpa::Plan& p, int64_t program_peak, const std::string& source) {
  if (program_peak <= 0) return;
  p.estimate.memory.peak_bytes = program_peak;
  if (p.pipeline && p.pipeline->stages.size() == 1) p.pipeline->stages[0].memory.peak_bytes = program_peak;
  if (p.memory_budget_bytes > 0 && program_peak > p.memory_budget_bytes) {
    std::fprintf(stderr, "alpa-plan: warning: %s: the rank programs peak at %s per device, over the memory budget of %s\n",
                 source.c_str(), alpa::format_bytes(static_cast<double>(program_peak)).c_str(),
                 alpa::format_bytes(static_cast<double>(p.memory_budget_bytes)).c_str());
  }
}

// Every plan alpa-plan writes or `cost` accepts, alpa-run runs: the plan as written (re-read
// from its JSON) has its rank programs lowered here first, as alpa-run lowers them
// (planner/spmd/plan_check.h); one alpa-run would refuse is refused now, with its reason.
// Half-precision plans are for GPUs, which alpa-run does not run yet (the CPU backend trains in
// fp32): a lowering that stops is reported as a warning and the plan is still written.
// A single-stage plan's peak memory then becomes its rank programs' (set_program_peak).
void check_plan_runs(alpa::Plan& p, const std::string& source, const alpa::Graph& forward,
                     const alpa::Cluster& cluster, bool report) {
  const alpa::Plan written = alpa::parse_plan(alpa::plan_to_json(p), source);
  alpa::RankCheck c;
  try {
    c = alpa::check_rank_programs(written, source, forward, cluster);
  } catch (const alpa::UserError& e) {
    if (written.precision == "fp32") throw;
    std::fprintf(stderr, "alpa-plan: warning: %s (a %s plan: for the GPU backend, not run by this version of alpa-run)\n",
                 e.what(), written.precision.c_str());
    return;
  }
  set_program_peak(p, c.peak_bytes, source);
  if (!report) return;
  if (c.stages > 1) {
    std::printf("  rank programs       %lld stages split; %lld rank programs lowered as alpa-run lowers them%s\n",
                static_cast<long long>(c.stages), static_cast<long long>(c.ranks_lowered),
                c.skipped ? " (multi-device stages of a half-precision plan: not lowered)" : "");
  } else {
    std::printf("  rank programs       %lld of %lld lowered as alpa-run lowers them%s\n", static_cast<long long>(c.ranks_lowered),
                static_cast<long long>(c.devices), c.ranks_lowered < c.devices ? " (the logical mesh's corners)" : "");
  }
}

int run_pipeline_search(const SearchFlags& f) {
  const auto t0 = std::chrono::steady_clock::now();
  const alpa::Cluster cluster = alpa::load_cluster(f.cluster);
  if (!f.logical_mesh.empty()) {
    throw alpa::UserError("--logical-mesh", f.logical_mesh,
                          "applies to the single-stage methods (shard, data, zero2, zero3), not --method " + f.method);
  }
  if (f.method != "megatron" && (f.tp || f.pp || f.dp)) {
    throw alpa::UserError("--tp/--pp/--dp", std::to_string(f.tp) + "/" + std::to_string(f.pp) + "/" + std::to_string(f.dp),
                          "apply to --method megatron only");
  }
  alpa::PipelineRequest rq;
  if (f.method == "auto") rq.method = alpa::PipelineMethod::kAuto;
  else if (f.method == "megatron") rq.method = alpa::PipelineMethod::kMegatron;
  else if (f.method == "megatron-grid") rq.method = alpa::PipelineMethod::kMegatronGrid;
  else rq.method = alpa::PipelineMethod::kPpDp;
  if (f.remat == "auto") rq.remat = alpa::RematMode::kAuto;
  else if (f.remat == "none") rq.remat = alpa::RematMode::kNone;
  else if (f.remat == "full") rq.remat = alpa::RematMode::kFull;
  else throw alpa::UserError("--remat", f.remat, "unknown value (auto, none or full)");
  if (f.schedule == "1f1b") rq.schedule = alpa::Schedule::k1F1B;
  else if (f.schedule == "gpipe") rq.schedule = alpa::Schedule::kGPipe;
  else throw alpa::UserError("--schedule", f.schedule, "unknown schedule (1f1b or gpipe)");
  const alpa::ImportedModel model = load(f.model);
  rq.forward = &model.graph;
  rq.model_name = file_name(model.path);
  rq.global_batch = model.batch;
  rq.microbatches = f.microbatches;
  if (rq.microbatches > 0 && rq.global_batch % rq.microbatches != 0) {
    throw alpa::UserError("--microbatches", std::to_string(rq.microbatches), "does not divide the global batch " + std::to_string(rq.global_batch));
  }
  rq.optimizer = parse_optimizer(f.optimizer);
  rq.precision = parse_precision(f.precision, cluster);
  rq.tp = f.tp;
  rq.pp = f.pp;
  rq.dp = f.dp;
  rq.cluster = &cluster;
  rq.cluster_label = cluster_label(cluster, f.cluster);
  rq.memory_budget_bytes = f.memory_budget;
  rq.layers = f.layers;
  rq.threads = f.threads > 0 ? f.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  rq.time_budget_s = f.time_budget;
  rq.progress = isatty(2) != 0;
  const std::optional<alpa::Profile> profile = load_profile(f.profile, cluster, rq.profile_text);
  if (profile) rq.profile = &*profile;
  alpa::PipelineResult r = alpa::search_pipeline(rq);
  std::printf("alpa-plan search: %s on %s (%lld devices), batch %lld, %s, %s, method %s\n", rq.model_name.c_str(),
              rq.cluster_label.c_str(), static_cast<long long>(cluster.num_devices()), static_cast<long long>(rq.global_batch),
              f.optimizer.c_str(), alpa::precision_name(rq.precision.compute).c_str(), f.method.c_str());
  std::printf("  searched %zu configuration%s: %lld stage solves over %lld distinct layer ranges, %lld t_max values, %.2f s%s\n",
              r.candidates.size(), r.candidates.size() == 1 ? "" : "s", static_cast<long long>(r.stage_solves),
              static_cast<long long>(r.distinct_ranges), static_cast<long long>(r.t_max_tried), r.search_time_s,
              r.cut_short ? " (cut short by --time-budget: the best plan found so far)" : "");
  if (r.skipped > 0) {
    std::printf("  %lld (layer range, submesh) pairs not costed: their lower bounds cannot fit in memory or beat the best plan\n",
                static_cast<long long>(r.skipped));
  }
  if (!r.found) {
    std::fprintf(stderr, "alpa-plan: error: %s: memory: %s\n", f.model.model.c_str(), r.diagnosis.c_str());
    return 2;
  }
  alpa::Plan& p = r.plan;
  const alpa::PlanPipeline& pl = *p.pipeline;
  std::printf("best: %zu stage%s, %lld microbatches, %s\n", pl.stages.size(), pl.stages.size() == 1 ? "" : "s",
              static_cast<long long>(p.microbatches), pl.schedule.c_str());
  std::printf("  %-6s %-9s %-8s %-8s %-6s %-12s %-12s %-10s %s\n", "stage", "layers", "mesh", "logical", "remat", "microbatch",
              "step tail", "peak mem", "devices");
  for (size_t k = 0; k < pl.stages.size(); ++k) {
    const alpa::PlanStage& st = pl.stages[k];
    const std::string layers = std::to_string(st.first_layer) + "-" + std::to_string(st.end_layer - 1);
    std::string devices = std::to_string(st.device_ids.front());
    if (st.device_ids.size() > 1) devices += ".." + std::to_string(st.device_ids.back());
    std::printf("  %-6zu %-9s %-8s %-8s %-6s %-12s %-12s %-10s %s\n", k, layers.c_str(),
                mesh_text(st.mesh_hosts, st.mesh_devices_per_host).c_str(), mesh_text(st.logical_d0, st.logical_d1).c_str(),
                st.remat ? "yes" : "no", seconds(st.microbatch_time_s).c_str(), seconds(st.step_time_s).c_str(),
                alpa::format_bytes(static_cast<double>(st.memory.peak_bytes)).c_str(), devices.c_str());
  }
  std::printf("  iteration time      %s  (slowest stage busy %s, pipeline bubble %s, step tail %s)\n", seconds(p.estimate.iteration_time_s).c_str(),
              seconds(pl.busy_time_s).c_str(), seconds(pl.bubble_time_s).c_str(), seconds(pl.step_tail_s).c_str());
  std::printf("  throughput          %.4g samples/s\n", p.estimate.throughput_samples_per_s);
  if (model.batch > 0) {
    double flops = 0;
    for (const alpa::Node& n : model.graph.nodes()) flops += alpa::count_node(model.graph, n).flops;
    // Forward FLOPs × 3 (forward, and a backward twice as large): the usual model-FLOPs count.
    const double tf = 3 * flops / std::max(1e-30, p.estimate.iteration_time_s) / static_cast<double>(cluster.num_devices()) / 1e12;
    std::printf("  model TFLOP/s/dev   %.3g\n", tf);
  }
  {
    std::string comm;
    for (const auto& [kind, bytes] : p.estimate.communication_bytes) {
      if (bytes > 0) comm += (comm.empty() ? "" : ", ") + kind + " " + alpa::format_bytes(bytes);
    }
    std::printf("  communication/dev   %s (busiest stage; transfers between stages in the plan)\n", comm.empty() ? "none" : comm.c_str());
  }
  check_plan_runs(p, f.output.empty() ? "plan" : f.output, model.graph, cluster, true);
  std::printf("  memory/dev          peak %s (most loaded stage)\n", alpa::format_bytes(static_cast<double>(p.estimate.memory.peak_bytes)).c_str());
  if (f.explain > 0) {
    std::printf("the plan and the %d best alternatives:\n", f.explain);
    int shown = 0;
    for (const alpa::PipelineCandidate& c : r.candidates) {
      if (shown++ > f.explain) break;
      if (c.feasible) std::printf("  %-12s %s%s%s\n", seconds(c.iteration_time_s).c_str(), c.label.c_str(), c.why.empty() ? "" : ": ", c.why.c_str());
      else std::printf("  %-12s %s: %s\n", "no fit", c.label.c_str(), c.why.c_str());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!f.trace.empty()) {
    write_file(f.trace, alpa::predicted_trace_json(p));
    std::printf("wrote %s (the predicted timeline; open it in https://ui.perfetto.dev)\n", f.trace.c_str());
  }
  if (!f.output.empty()) {
    write_file(f.output, alpa::plan_to_json(p));
    std::printf("wrote %s (%.2f s in all)\n", f.output.c_str(), secs);
  } else {
    std::printf("(no -o given: plan not written; %.2f s in all)\n", secs);
  }
  return 0;
}

int run_search(const SearchFlags& f) {
  if (is_pipeline_method(f.method)) return run_pipeline_search(f);
  const auto t0 = std::chrono::steady_clock::now();
  const alpa::Cluster cluster = alpa::load_cluster(f.cluster);
  const alpa::ImportedModel model = load(f.model);
  alpa::SearchRequest rq;
  rq.forward = &model.graph;
  rq.model_name = file_name(model.path);
  rq.global_batch = model.batch;
  rq.microbatches = f.microbatches > 0 ? f.microbatches : 1;
  rq.optimizer = parse_optimizer(f.optimizer);
  rq.precision = parse_precision(f.precision, cluster);
  rq.method = alpa::parse_method(f.method);
  rq.cluster = &cluster;
  rq.cluster_label = cluster_label(cluster, f.cluster);
  if (!f.logical_mesh.empty()) {
    rq.logical = alpa::parse_logical_mesh(f.logical_mesh);
    if (!rq.logical) throw alpa::UserError("--logical-mesh", f.logical_mesh, "expected D0xD1, e.g. 2x4");
  }
  rq.memory_budget_bytes = f.memory_budget;
  rq.threads = f.threads;
  rq.time_limit_s = f.time_limit;
  rq.ilp_stats = f.ilp_stats;
  const std::optional<alpa::Profile> profile = load_profile(f.profile, cluster, rq.profile_text);
  if (profile) rq.profile = &*profile;
  rq.decompose = !f.no_decompose;
  alpa::SearchResult r = alpa::search_shard_parallel(rq);
  std::printf("alpa-plan search: %s on %s (%lld devices), batch %lld, %s, %s, method %s\n", rq.model_name.c_str(),
              rq.cluster_label.c_str(), static_cast<long long>(cluster.num_devices()), static_cast<long long>(rq.global_batch),
              f.optimizer.c_str(), alpa::precision_name(rq.precision.compute).c_str(), f.method.c_str());
  std::printf("  %-8s %-14s %-14s %-12s %-10s %-22s %s\n", "mesh", "iteration", "communication", "peak mem", "groups", "ILP vars/rows", "solve");
  for (const auto& v : r.views) {
    const std::string mesh = std::to_string(v.view.d0) + "x" + std::to_string(v.view.d1);
    const std::string ilp = std::to_string(v.solve.largest_variables) + "/" + std::to_string(v.solve.largest_constraints);
    if (v.feasible) {
      std::printf("  %-8s %-14s %-14s %-12s %-10lld %-22s %s%s\n", mesh.c_str(), seconds(v.estimate.iteration_time_s).c_str(),
                  seconds(v.estimate.communication_time_s).c_str(), alpa::format_bytes(static_cast<double>(v.estimate.memory.peak_bytes)).c_str(),
                  static_cast<long long>(v.groups), ilp.c_str(), seconds(v.solve.solve_time_s).c_str(),
                  v.solve.proven_optimal ? "" : " (not proven optimal)");
    } else {
      std::printf("  %-8s %-14s %-14s %-12s %-10lld %-22s %s\n", mesh.c_str(), "does not fit", "-", "-",
                  static_cast<long long>(v.groups), ilp.c_str(), seconds(v.solve.solve_time_s).c_str());
    }
  }
  if (f.ilp_stats) {
    std::printf("  one ILP for the whole graph (not solved; the decomposition solves the pieces):\n");
    for (const auto& v : r.views) {
      std::printf("  %lldx%lld  before merging: %lld nodes, %lld variables, %lld constraints; after: %lld groups, %lld variables, %lld constraints; solved %lld ILPs, largest %lld/%lld\n",
                  static_cast<long long>(v.view.d0), static_cast<long long>(v.view.d1),
                  static_cast<long long>(v.before_merging.groups), static_cast<long long>(v.before_merging.variables),
                  static_cast<long long>(v.before_merging.constraints), static_cast<long long>(v.after_merging.groups),
                  static_cast<long long>(v.after_merging.variables), static_cast<long long>(v.after_merging.constraints),
                  static_cast<long long>(v.solve.ilps_solved), static_cast<long long>(v.solve.largest_variables),
                  static_cast<long long>(v.solve.largest_constraints));
    }
  }
  if (!r.found) {
    std::fprintf(stderr, "alpa-plan: error: %s: memory: %s\n", f.model.model.c_str(), r.diagnosis.c_str());
    return 2;
  }
  check_plan_runs(r.plan, f.output.empty() ? "plan" : f.output, model.graph, cluster, true);
  std::printf("best: %lldx%lld mesh\n%s", static_cast<long long>(r.plan.logical_d0), static_cast<long long>(r.plan.logical_d1),
              estimate_text(r.plan.estimate).c_str());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!f.trace.empty()) {
    write_file(f.trace, alpa::predicted_trace_json(r.plan));
    std::printf("wrote %s (the predicted timeline; open it in https://ui.perfetto.dev)\n", f.trace.c_str());
  }
  if (!f.output.empty()) {
    write_file(f.output, alpa::plan_to_json(r.plan));
    std::printf("wrote %s (%.2f s in all)\n", f.output.c_str(), secs);
  } else {
    std::printf("(no -o given: plan not written; %.2f s in all)\n", secs);
  }
  return 0;
}

// `cost --strategies`: every node group's leader and the strategies it may take in this
// single-stage plan's view, as JSON ({"node": ["strategy", ...], ...}, canonical order).
int print_editable_nodes(const alpa::Plan& plan, const std::string& plan_path, const alpa::Graph& forward,
                         const alpa::Cluster& cluster, const alpa::Profile* profile) {
  if (plan.pipeline) {
    throw alpa::UserError(plan_path, "pipeline", "--strategies lists the strategies of a single-stage plan's nodes");
  }
  const alpa::TrainingGraph tg = alpa::plan_training_graph(plan, plan_path, forward);
  const alpa::StrategyGraph sg = alpa::plan_strategy_graph(plan, plan_path, tg, cluster, profile);
  std::string out = "{";
  const std::vector<alpa::EditableNode> nodes = alpa::editable_nodes(sg);
  for (size_t i = 0; i < nodes.size(); ++i) {
    out += std::string(i ? "," : "") + "\n  " + nlohmann::json(nodes[i].node).dump() + ": " + nlohmann::json(nodes[i].strategies).dump();
  }
  std::printf("%s\n}\n", out.c_str());
  return 0;
}

int run_cost(const std::string& plan_path, const ModelFlags& mf, const std::string& cluster_spec,
             const std::string& profile_path, bool json, bool strategies, bool derive) {
  alpa::Plan plan = alpa::parse_plan(read_file(plan_path), plan_path);
  ModelFlags flags = mf;
  if (flags.batch == 0) flags.batch = plan.global_batch;
  const alpa::ImportedModel model = load(flags);
  std::string spec = cluster_spec;
  if (spec.empty()) spec = alpa::plan_cluster_spec(plan);
  const alpa::Cluster cluster = alpa::load_cluster(spec);
  std::string profile_text;
  const std::optional<alpa::Profile> profile = load_profile(profile_path, cluster, profile_text);
  if (strategies) return print_editable_nodes(plan, plan_path, model.graph, cluster, profile ? &*profile : nullptr);
  if (derive) {
    if (plan.pipeline) {
      throw alpa::UserError(plan_path, "pipeline", "--derive-followers re-derives the followers of a single-stage plan");
    }
    alpa::DerivedCounts counts;
    plan = alpa::derive_followers(plan, plan_path, model.graph, cluster, profile ? &*profile : nullptr, &counts);
    std::fprintf(stderr, "alpa-plan cost: %s: re-derived from the leaders: %lld strategies and %lld specs changed\n",
                 plan_path.c_str(), static_cast<long long>(counts.strategies), static_cast<long long>(counts.tensors));
  }
  if (plan.pipeline) {
    const alpa::PipelineCost r = alpa::cost_pipeline_plan(plan, plan_path, model.graph, cluster, profile ? &*profile : nullptr, profile_text);
    alpa::Plan out = plan;
    out.estimate = r.estimate;
    out.pipeline = r.pipeline;
    check_plan_runs(out, plan_path, model.graph, cluster, !json);
    if (json) {
      std::printf("%s", alpa::plan_to_json(out).c_str());
      return 0;
    }
    std::printf("alpa-plan cost: %s (%s, %zu stages, %lld microbatches, %s)\n", plan_path.c_str(), plan.cluster.c_str(),
                r.pipeline.stages.size(), static_cast<long long>(plan.microbatches), r.pipeline.schedule.c_str());
    for (size_t k = 0; k < r.pipeline.stages.size(); ++k) {
      const alpa::PlanStage& st = r.pipeline.stages[k];
      std::printf("  stage %zu: layers %lld-%lld on %s (logical %s)%s: %s per microbatch, peak %s\n", k,
                  static_cast<long long>(st.first_layer), static_cast<long long>(st.end_layer - 1),
                  mesh_text(st.mesh_hosts, st.mesh_devices_per_host).c_str(), mesh_text(st.logical_d0, st.logical_d1).c_str(),
                  st.remat ? ", remat" : "", seconds(st.microbatch_time_s).c_str(),
                  alpa::format_bytes(static_cast<double>(st.memory.peak_bytes)).c_str());
    }
    std::printf("  iteration time      %s  (slowest stage busy %s, pipeline bubble %s, step tail %s)\n",
                seconds(r.estimate.iteration_time_s).c_str(), seconds(r.pipeline.busy_time_s).c_str(),
                seconds(r.pipeline.bubble_time_s).c_str(), seconds(r.pipeline.step_tail_s).c_str());
    std::printf("  throughput          %.4g samples/s\n", r.estimate.throughput_samples_per_s);
    if (out == plan) {
      std::printf("  (equals the estimate in the plan)\n");
    } else {
      std::printf("  (differs from the estimate in the plan: iteration time %s there)\n", seconds(plan.estimate.iteration_time_s).c_str());
    }
    return 0;
  }
  const alpa::CostResult r = alpa::cost_plan(plan, plan_path, model.graph, cluster, profile ? &*profile : nullptr, profile_text);
  alpa::Plan out = plan;
  out.estimate = r.estimate;
  check_plan_runs(out, plan_path, model.graph, cluster, !json);
  if (json) {
    std::printf("%s", alpa::plan_to_json(out).c_str());
  } else {
    std::printf("alpa-plan cost: %s (%s, %lldx%lld mesh)\n%s", plan_path.c_str(), plan.cluster.c_str(),
                static_cast<long long>(plan.logical_d0), static_cast<long long>(plan.logical_d1), estimate_text(out.estimate).c_str());
    if (!(out.estimate == plan.estimate)) {
      std::printf("  (differs from the estimate in the plan: iteration time %s there)\n", seconds(plan.estimate.iteration_time_s).c_str());
    } else {
      std::printf("  (equals the estimate in the plan)\n");
    }
  }
  return 0;
}

struct ProfileFlags {
  std::vector<std::string> models;
  int64_t batch = 0;
  std::string cluster;
  std::string optimizer = "adam";
  std::string output;
  int64_t max_message_bytes = int64_t{64} << 20;
};

// nccl-tests' bus bandwidth: what a ring moves per device, per second.
double bus_bandwidth(alpa::Collective kind, int64_t n, double bytes, double seconds) {
  return alpa::collective_bytes_per_device(kind, n, bytes) / seconds;
}

void print_collective_tables(const alpa::Profile& p) {
  for (const alpa::CollectiveTable& t : p.collectives) {
    std::printf("%s over %lld ranks\n  %12s %12s %12s %12s\n", std::string(alpa::collective_name(t.kind)).c_str(),
                static_cast<long long>(t.group_size), "size (B)", "time (us)", "algbw (GB/s)", "busbw (GB/s)");
    for (const alpa::ProfilePoint& pt : t.points) {
      std::printf("  %12.0f %12.1f %12.3f %12.3f\n", pt.x, pt.seconds * 1e6, pt.x / pt.seconds / 1e9,
                  bus_bandwidth(t.kind, t.group_size, pt.x, pt.seconds) / 1e9);
    }
  }
}

// `mpirun -np N alpa-plan profile`: every rank measures at once; rank 0 writes the file.
int run_profile(const ProfileFlags& f, int* argc, char*** argv) {
  alpa::exec::init_mpi(argc, argv);
  std::unique_ptr<alpa::exec::MpiCommunicator> world = alpa::exec::make_mpi_world_communicator();
  const bool root = world->rank() == 0;
  const alpa::Cluster cluster = alpa::load_cluster(f.cluster);
  if (cluster.name != "local") {
    throw alpa::UserError("--cluster", f.cluster, "this version profiles CPU ranks (local:N) only");
  }
  if (cluster.num_devices() != world->size()) {
    throw alpa::UserError("--cluster", f.cluster, "names " + std::to_string(cluster.num_devices()) + " devices; run under mpirun -np " +
                          std::to_string(cluster.num_devices()) + " (this job has " + std::to_string(world->size()) + ")");
  }
  std::vector<alpa::ImportedModel> imported;
  for (const std::string& path : f.models) {
    ModelFlags mf;
    mf.model = path;
    mf.batch = f.batch;
    imported.push_back(load(mf));
  }
  std::vector<alpa::exec::ProfiledModel> models;
  for (const alpa::ImportedModel& m : imported) models.push_back({file_name(m.path), &m.graph, m.batch});
  alpa::exec::ProfileOptions o;
  o.optimizer = parse_optimizer(f.optimizer);
  o.max_message_bytes = f.max_message_bytes;
  alpa::exec::MpiCommunicator& w = *world;
  o.split = [&w](int color, int key) -> std::unique_ptr<alpa::exec::Communicator> { return w.split(color, key); };
  const auto t0 = std::chrono::steady_clock::now();
  if (root) {
    o.progress = [t0](const std::string& what, int64_t done, int64_t total) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "alpa-plan profile: [%lld/%lld] %s (%.1f s, about %.0f s left)\n", static_cast<long long>(done),
                   static_cast<long long>(total), what.c_str(), s, s / static_cast<double>(done) * static_cast<double>(total - done));
    };
  }
  alpa::Profile p = alpa::exec::measure_profile(models, *world, o, cluster.name, cluster.device.kind);
  p.measured = {{"ranks", std::to_string(world->size())},
                {"blas_threads", std::to_string(alpa::exec::cpu_blas_threads())},
                {"optimizer", f.optimizer}};
  std::string names;
  for (const auto& m : models) names += (names.empty() ? "" : ", ") + m.name + " at batch " + std::to_string(m.batch);
  p.measured["models"] = names;
  if (root) {
    write_file(f.output, alpa::profile_to_json(p));
    print_collective_tables(p);
    size_t points = 0;
    for (const alpa::KernelTable& t : p.kernels) points += t.points.size();
    std::printf("wrote %s: %zu kernel tables (%zu points), %zu collective tables, %.1f s\n", f.output.c_str(), p.kernels.size(),
                points, p.collectives.size(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  world.reset();
  alpa::exec::finalize_mpi();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"alpa-plan: search parallel execution plans for training a model on a cluster"};
  app.require_subcommand(1);

  ModelFlags inspect_flags;
  bool json = false;
  CLI::App* inspect = app.add_subcommand(
      "inspect", "parameters, FLOPs, memory and structure of a model's training iteration");
  add_model_flags(inspect, inspect_flags);
  inspect->add_flag("--json", json, "print JSON (schemas/inspect.schema.json)");

  SearchFlags sf;
  CLI::App* search = app.add_subcommand("search", "search an execution plan: pipeline stages on submeshes, sharded inside");
  add_model_flags(search, sf.model);
  search->add_option("--cluster", sf.cluster, "builtin:NAME:HOSTS (p3.16xlarge, dgx-a100, dgx-h100), local:N, or a cluster.json")->required();
  search->add_option("--microbatches", sf.microbatches, "gradient accumulation steps per iteration")->check(CLI::PositiveNumber);
  search->add_option("--optimizer", sf.optimizer, "sgd, sgd-momentum (SGD keeping a momentum buffer), adam or adamw (default adam)");
  search->add_option("--precision", sf.precision, "fp32, fp16 or bf16 (default fp16 where the device has faster half precision, else fp32)");
  search->add_option("--method", sf.method,
                     "auto (default: pipeline stages on submeshes, each sharded by the ILP), megatron (with --tp --pp --dp), "
                     "megatron-grid (the best Megatron-LM configuration), pp-dp (pipeline + data parallel); or one stage on "
                     "the whole cluster: shard (the ILP), data, zero2, zero3");
  search->add_option("--layers", sf.layers, "layers the model is cut into (default: automatic)")->check(CLI::PositiveNumber);
  search->add_option("--remat", sf.remat, "activation recomputation per stage: auto (default), none, full");
  search->add_option("--schedule", sf.schedule, "pipeline schedule: 1f1b (default) or gpipe");
  search->add_option("--tp", sf.tp, "megatron: tensor-parallel size")->check(CLI::PositiveNumber);
  search->add_option("--pp", sf.pp, "megatron: pipeline stages")->check(CLI::PositiveNumber);
  search->add_option("--dp", sf.dp, "megatron: data-parallel size")->check(CLI::PositiveNumber);
  search->add_option("--time-budget", sf.time_budget, "seconds: return the best plan found so far when they are spent")->check(CLI::PositiveNumber);
  search->add_option("--explain", sf.explain, "print the N best alternatives and why they lost")->check(CLI::NonNegativeNumber);
  search->add_option("--logical-mesh", sf.logical_mesh, "D0xD1: only this logical view (default: every view)");
  search->add_option("--memory-budget", sf.memory_budget, "bytes per device (default: the device's memory less its reserve)")->check(CLI::PositiveNumber);
  search->add_option("--time-limit", sf.time_limit, "wall-clock safety limit per ILP, seconds (default 120)")->check(CLI::PositiveNumber);
  search->add_option("--threads", sf.threads, "threads for independent ILPs (default: all cores)")->check(CLI::NonNegativeNumber);
  search->add_option("--profile", sf.profile, "measured kernel/collective timings (schemas/profile.schema.json); default: datasheet figures");
  search->add_flag("--ilp-stats", sf.ilp_stats, "also print the size of the whole graph as one ILP, before and after follower merging");
  search->add_flag("--no-decompose", sf.no_decompose, "solve the whole graph as one ILP (slow; the benchmark's baseline)");
  search->add_option("-o,--output", sf.output, "where to write the plan (JSON)");
  search->add_option("--trace", sf.trace, "write the plan's predicted timeline of one step as a Chrome trace (as alpa-run --trace measures it)");

  std::string cost_plan_path, cost_cluster, cost_profile;
  ModelFlags cost_model;
  bool cost_json = false, cost_strategies = false, cost_derive = false;
  CLI::App* cost = app.add_subcommand("cost", "validate a (possibly hand-edited) plan against the model and re-cost it");
  cost->add_option("plan", cost_plan_path, "plan JSON written by search")->required();
  cost->add_option("--model", cost_model.model, "the ONNX model the plan was made for")->required();
  cost->add_option("--batch", cost_model.batch, "global batch (default: the plan's)")->check(CLI::PositiveNumber);
  cost->add_option("--batch-dim", cost_model.batch_dims, "NAME:AXIS — as for search");
  cost->add_option("--cluster", cost_cluster, "cluster (default: the one the plan names)");
  cost->add_option("--profile", cost_profile, "the profile the plan was searched with, if any");
  cost->add_flag("--json", cost_json, "print the plan with the re-costed estimate");
  cost->add_flag("--derive-followers", cost_derive,
                 "re-derive every follower's strategy and every tensor spec from the leaders' strategies and the parameters' "
                 "specs (after editing a leader); with --json, print the completed plan");
  cost->add_flag("--strategies", cost_strategies,
                 "print, as JSON, every editable node of a single-stage plan and the strategies it may take on the plan's mesh");

  ProfileFlags pf;
  CLI::App* profile = app.add_subcommand(
      "profile", "measure this cluster's kernels and collectives for the cost model (run under mpirun, one rank per device)");
  profile->add_option("--model", pf.models, "ONNX model whose kernels to measure (repeatable)")->required();
  profile->add_option("--batch", pf.batch, "global batch of every model (default: each model's own)")->check(CLI::PositiveNumber);
  profile->add_option("--cluster", pf.cluster, "local:N, N being the ranks of this job")->required();
  profile->add_option("--optimizer", pf.optimizer, "the optimizer whose update kernels to measure (default adam)");
  profile->add_option("--max-message-bytes", pf.max_message_bytes, "largest collective measured (default 64 MiB)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 34));
  profile->add_option("-o,--output", pf.output, "the profile to write (JSON, schemas/profile.schema.json)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  try {
    if (inspect->parsed()) {
      const alpa::ImportedModel model = load(inspect_flags);
      const alpa::InspectReport report = alpa::inspect_model(model);
      std::cout << (json ? alpa::format_report_json(report) : alpa::format_report_text(report));
    } else if (search->parsed()) {
      return run_search(sf);
    } else if (cost->parsed()) {
      return run_cost(cost_plan_path, cost_model, cost_cluster, cost_profile, cost_json, cost_strategies, cost_derive);
    } else if (profile->parsed()) {
      return run_profile(pf, &argc, &argv);
    }
  } catch (const alpa::UserError& e) {
    std::fprintf(stderr, "alpa-plan: error: %s\n", e.what());
    return 2;
  } catch (const alpa::InternalError& e) {
    std::fprintf(stderr, "alpa-plan: %s\n", e.what());
    return 3;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "alpa-plan: error: out of memory\n");
    return 3;
  }
  return 0;
}
