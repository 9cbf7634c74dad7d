#include "executor/comm/planned_run.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "executor/comm/pipeline_rank.h"
#include "executor/comm/rank_runtime.h"
#include "executor/runtime/checkpoint.h"
#include "executor/runtime/data.h"
#include "executor/runtime/npy.h"
#include "planner/cluster/cluster.h"
#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/graph/rebatch.h"
#include "executor/comm/test_hook.h"
#include "planner/spmd/plan_check.h"
#include "planner/spmd/program_memory.h"
#include "planner/inter_op/pipeline.h"
#include "planner/intra_op/search.h"
#include "planner/onnx/import.h"
#include "planner/plan/plan.h"

namespace alpa::exec {
namespace {

std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path, what, "cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Everything a rank needs for its steps, built before the first one.
struct RankState {
  Plan plan;
  ImportedModel model;
  Cluster cluster;
  std::unique_ptr<TrainingGraph> plan_tg;  // the plan's graph (what the lowering reads)
  std::unique_ptr<Cluster> stage_mesh;     // a multi-device pipeline stage's devices (sg points here)
  std::unique_ptr<StrategyGraph> sg;
  std::vector<int> choice;
  RankLowering lowering;
  std::unique_ptr<TrainingGraph> tg;  // this rank's graph: one microbatch of its block
  SoftmaxCrossEntropyTarget loss_target;
  bool count_labels = false;  // the loss's mean divides by the step's global label count
  std::unique_ptr<DataSource> data;
  std::unique_ptr<Kernels> kernels;
  std::unique_ptr<Trainer> trainer;
  RankComms comms;
  uint64_t seed = 0;
  int64_t first_step = 0;  // a resumed run's first step
  BlockOf block;           // the part of each persistent tensor this rank holds
  // Pipeline plans (several stages): this rank's stage. Its trainer runs the stage's nodes of
  // `tg` (the training graph of one microbatch).
  std::unique_ptr<PipelineRank> pipe;
  std::vector<bool> writes;  // pipelines: per tensor, whether this rank is the lowest holding it
  std::vector<int> writer_stage;  // pipelines: per tensor, the stage of the lowest rank holding it
};

// The block of a tensor split as `spec` (null or short: the rest whole) that the device at
// logical `coord` holds: [lo, hi) of each dim of the `global` shape, each `local[d]` long but for
// the padding of the last block.
Box block_ranges(const ShardingSpec* spec, const LogicalMesh& view, const int64_t coord[2], const Shape& local,
                 const Shape& global) {
  Box out;
  for (size_t d = 0; d < global.size(); ++d) {
    const DimSharding s = spec && d < spec->dims.size() ? spec->dims[d] : DimSharding::kR;
    const int64_t lo = std::min(global[d], block_index(s, view, coord) * local[d]);
    out.emplace_back(lo, std::min(global[d], lo + local[d]));
  }
  return out;
}

// The block of persistent tensor `t` the rank at logical (c0, c1) holds (see RankState::block).
HeldBlock held_block(const RankLowering& low, const Graph& pg, const Graph& g, TensorId t, int64_t c0, int64_t c1) {
  HeldBlock b;
  const int64_t coord[2] = {c0, c1};
  const Shape& global = pg.tensor(t).shape;
  const ShardingSpec* spec =
      static_cast<size_t>(t) < low.stored_spec.size() && !low.stored_spec[t].dims.empty() ? &low.stored_spec[t] : nullptr;
  b.ranges = block_ranges(spec, low.view, coord, g.tensor(t).shape, global);
  AxisMask used = 0;
  for (size_t d = 0; spec && d < global.size(); ++d) {
    for (int a : mesh_axes(spec->dims[d], low.view)) used |= static_cast<AxisMask>(1u << a);
  }
  b.buffer = g.tensor(t).shape;
  b.global = global;
  for (int a : {0, 1}) {
    if (!(used & (1u << a)) && coord[a] != 0) b.writer = false;
  }
  return b;
}

// The batch dim of each Reshard output: its input's (a Reshard keeps the dims' order; a
// parameter gathered has none). Dropout masks of a resharded gradient are drawn at its samples.
void extend_batch_dims(const Graph& g, std::vector<int>& dims) {
  dims.resize(g.num_tensors(), -1);
  for (const Node& n : g.nodes()) {
    if (n.kind == OpKind::kReshard) dims[static_cast<size_t>(n.outputs[0])] = dims[static_cast<size_t>(n.inputs[0])];
  }
}

// The loss of a split batch (over microbatches, ranks, or blocks inside the rank's graph)
// divides by the step's global label count (see set_up); `rows_taken`: each rank reads rows of
// the data (microbatches, or its block of them), which needs the batch in dim 0.
void set_loss_counting(RankState& st, const PlannedRunOptions& o, bool split, bool rows_taken) {
  const Graph& forward = st.model.graph;
  bool has_sce = false;
  for (const Node& n : forward.nodes()) has_sce = has_sce || n.kind == OpKind::kSoftmaxCrossEntropyLoss;
  const Tensor& loss_tensor = forward.tensor(forward.loss);
  const bool mean_loss = !has_sce && st.plan.microbatches == 1 && loss_tensor.producer != kNoId &&
                         forward.node(loss_tensor.producer).kind == OpKind::kReduceMean;
  st.count_labels = split && !mean_loss;
  if (st.count_labels) st.loss_target = cross_entropy_target(forward, o.model);
  if (rows_taken) require_batch_in_dim0(forward, o.model, "a split batch is taken from dim 0; this input has no batch in dim 0");
}

// The run's seed (a resumed run keeps its checkpoint's, and starts at its step), data source and
// kernels, and the trainer of the rank program st.tg running its `active` nodes (empty: all).
void make_trainer(RankState& st, const PlannedRunOptions& o, std::vector<bool> active) {
  const Plan& plan = st.plan;
  const Graph& forward = st.model.graph;
  st.seed = o.seed;
  if (!o.resume.empty()) {
    const CheckpointInfo info = check_resume(o.resume, o.steps, plan.global_batch, plan.optimizer, o.seed_given ? &o.seed : nullptr);
    st.seed = info.seed;
    st.first_step = info.step;
  }
  st.data = o.data == "synthetic" ? synthetic_data(forward, st.seed) : open_data_directory(o.data, forward);
  st.kernels = make_cpu_kernels();
  st.trainer = std::make_unique<Trainer>(*st.tg, *st.kernels, st.seed, std::move(active));
}

// Once st.block says what each rank holds: sharded parameters and buffers start from their
// block of the whole initial value (or the checkpoint's), tensor dumps and batch dims are set.
void finish_set_up(RankState& st, const PlannedRunOptions& o, int rank, std::vector<int> dims) {
  const RankLowering& low = st.lowering;
  for (size_t t = 0; t < low.stored_spec.size(); ++t) {
    const TensorId id = static_cast<TensorId>(t);
    const Tensor& whole = st.plan_tg->graph.tensor(id);
    if (low.stored_spec[t].dims.empty() || (whole.role != TensorRole::kParameter && whole.role != TensorRole::kBuffer) ||
        !st.trainer->holds(id) || st.tg->graph.tensor(id).shape == whole.shape) {
      continue;
    }
    std::vector<uint8_t> value(static_cast<size_t>(whole.bytes()));
    initial_value(whole, st.seed, value.data());
    copy_block(value.data(), whole.shape, dtype_bytes(whole.dtype), st.block(id), st.trainer->mutable_value(id));
  }
  if (!o.resume.empty()) load_checkpoint(o.resume, *st.trainer, st.block);
  st.trainer->set_dump(o.dump_tensors, o.dump_dir + "/rank" + std::to_string(rank));
  st.trainer->set_batch_dims(std::move(dims), low.microbatch_samples);
}

// What the lowering's collectives send per step on this rank, counting only those its stage's
// nodes run: gradient reductions (once per step or per microbatch), partial outputs and
// statistics inside operators (per microbatch).
std::map<std::string, double> stage_collective_bytes(const RankLowering& low, const TrainingGraph& tg,
                                                      const std::vector<bool>& active, const Graph& plan_graph) {
  std::map<std::string, double> out = {{"all_reduce", 0}, {"all_gather", 0}, {"reduce_scatter", 0}, {"all_to_all", 0}};
  const Graph& g = tg.graph;
  const double K = static_cast<double>(low.microbatches);
  auto add = [&](const CollectiveStep& c, double times) { out[std::string(collective_name(c.kind))] += times * c.bytes_per_device; };
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    if (!active[k]) continue;
    if (n.kind == OpKind::kReshard) {
      const auto& step = low.reshards.at(static_cast<size_t>(n.attrs.get_int("reshard", 0)));
      for (const CollectiveStep& c : step.reshard.steps) add(c, step.per_step || step.optimizer_phase ? 1.0 : K);
    }
    for (const auto& r : low.output_reductions) {
      for (TensorId t : n.outputs) {
        if (g.tensor(t).name != r.tensor) continue;
        for (const CollectiveStep& c : r.reshard.steps) add(c, K);
      }
    }
    const NodeId in_plan = plan_graph.find_node(n.name);  // the statistics are per plan node
    if (in_plan != kNoId && static_cast<size_t>(in_plan) < low.stats.size()) {
      for (const CollectiveStep& c : low.stats[static_cast<size_t>(in_plan)]) add(c, K);
    }
  }
  return out;
}

// The step time against the plan's: the median of the steps after the first two (which touch
// memory for the first time), or of all when there are fewer than three.
void print_step_time(std::vector<double> seconds, double planned) {
  if (seconds.empty()) return;
  if (seconds.size() >= 3) seconds.erase(seconds.begin(), seconds.begin() + 2);
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  std::fprintf(stderr, "step time: %.3f s measured (median of %zu steps), %.3f s planned (%+.1f%%)\n", median, seconds.size(),
               planned, 100.0 * (planned - median) / median);
}

// A pipeline plan: every rank builds the training graph of one microbatch of its rows and runs
// its stage's nodes of it. A stage on several devices runs its mesh's rank program: the whole
// model planned by the stage's method on the mesh, with the stage's own choice applied to its
// nodes (choose_pipeline_stage, lower_stage_rank: planner/spmd/plan_check.h, which the planner's
// check lowers too).
std::unique_ptr<RankState> set_up_pipeline(const PlannedRunOptions& o, std::unique_ptr<RankState> st, int rank, int world,
                                           const OptimizerConfig& opt) {
  const Plan& plan = st->plan;
  const std::string& src = o.plan;
  const Graph& forward = st->model.graph;
  st->pipe = std::make_unique<PipelineRank>(place_pipeline(plan, src, rank, world));
  PipelineRank& pr = *st->pipe;
  const PlanStage& stage = plan.pipeline->stages[static_cast<size_t>(pr.stage)];
  RankLowering& low = st->lowering;
  TrainingGraph program;
  std::vector<int> dims;
  const int64_t n = static_cast<int64_t>(stage.device_ids.size());
  if (n == 1) {
    program = *st->plan_tg;
    dims = training_batch_dims(program, forward, plan.global_batch);
    low.view = LogicalMesh{};
    low.microbatch_samples = plan.global_batch / plan.microbatches;
    low.microbatches = plan.microbatches;
  } else {
    StageChoice choice = choose_pipeline_stage(plan, src, forward, *st->plan_tg, opt, pr.stage);
    StageRank sr = lower_stage_rank(choice, plan, src, forward, opt, pr.index);
    st->stage_mesh = std::move(choice.mesh);
    st->sg = std::move(choice.sg);
    st->choice = std::move(choice.choice);
    low = std::move(sr.lowering);
    dims = training_batch_dims(sr.local, forward, plan.global_batch);
    program = std::move(sr.program);
    extend_batch_dims(program.graph, dims);
  }
  // The block of a program tensor this rank holds: whole on a stage of one device; otherwise as
  // its spec in the stage's choice says (a converted gradient: its conversion's result; a raw
  // gradient contribution: the spec its forward node reads the input with).
  const Graph& pgraph = st->plan_tg->graph;
  std::map<TensorId, std::pair<NodeId, size_t>> grad_edge;
  for (const GradEdge& e : st->plan_tg->grad_edges) grad_edge[e.grad] = {e.node, e.input};
  std::unique_ptr<ChosenSpecs> specs;
  if (n > 1) specs = std::make_unique<ChosenSpecs>(chosen_specs(*st->sg, st->choice));
  // A gradient's sum (of contributions converted to one layout) is laid out as its first part.
  // In a data-parallel stage the batch is split as the rank's block (the program's local shapes).
  std::function<ShardingSpec(TensorId)> spec_of = [&](TensorId t) -> ShardingSpec {
    const Tensor& local = program.graph.tensor(t);
    const NodeId p = local.producer;
    if (p != kNoId && program.graph.node(p).kind == OpKind::kReshard) {
      return low.reshards.at(static_cast<size_t>(program.graph.node(p).attrs.get_int("reshard", 0))).dst;
    }
    if (specs && static_cast<size_t>(t) < specs->tensor.size() && !specs->tensor[static_cast<size_t>(t)].dims.empty()) {
      return specs->tensor[static_cast<size_t>(t)];
    }
    if (specs && grad_edge.count(t) > 0) {
      const auto [node, input] = grad_edge.at(t);
      return specs->node[static_cast<size_t>(node)]->in[input];
    }
    if (p != kNoId && local.role == TensorRole::kGradient) {
      const Node& n = program.graph.node(p);
      if ((n.kind == OpKind::kAdd || n.kind == OpKind::kIdentity) && !n.inputs.empty()) return spec_of(n.inputs[0]);
    }
    return ShardingSpec{};
  };
  const std::function<Box(TensorId)> box_of = [&](TensorId t) {
    TensorId root = t;
    while (program.graph.tensor(root).producer != kNoId && program.graph.node(program.graph.tensor(root).producer).kind == OpKind::kReshard) {
      root = program.graph.node(program.graph.tensor(root).producer).inputs[0];
    }
    const ShardingSpec spec = spec_of(t);
    return block_ranges(&spec, low.view, low.coord, program.graph.tensor(t).shape, pgraph.tensor(root).shape);
  };
  build_pipeline_program(pr, plan, src, program, pgraph, st->plan_tg->num_forward_nodes, box_of);
  // The block of each shared parameter's gradient this rank holds: as the parameter is stored,
  // or as the optimizer's state is where the gradient is reduce-scattered to it (ZeRO-2).
  for (const auto& sh : pr.split.shared) {
    const ParameterSlot& slot = program.parameters[sh.slot];
    if (program.graph.tensor(slot.grad).shape == program.graph.tensor(slot.param).shape) {
      pr.my_shared_box.push_back(held_block(low, pgraph, program.graph, slot.param, low.coord[0], low.coord[1]).ranges);
    } else {
      ALPA_CHECK(specs != nullptr, "pipeline: a one-device stage keeps a gradient in another layout than its parameter");
      const ShardingSpec& state = specs->param[static_cast<size_t>(slot.param)]->state;
      pr.my_shared_box.push_back(block_ranges(&state, low.view, low.coord, program.graph.tensor(slot.grad).shape,
                                              pgraph.tensor(slot.param).shape));
    }
  }
  if (n == 1) {
    low.predicted_bytes = {{"all_reduce", 0}, {"all_gather", 0}, {"reduce_scatter", 0}, {"all_to_all", 0}};
  } else {
    low.predicted_bytes = stage_collective_bytes(low, pr.program->tg, pr.program->active, st->plan_tg->graph);
  }
  low.predicted_bytes["send"] = 0;  // known once the ranks have exchanged their rows (run_planned)
  low.predicted_memory = stage.memory;
  set_loss_counting(*st, o, plan.microbatches * n > 1, plan.microbatches * low.batch_ways > 1);
  st->tg = std::make_unique<TrainingGraph>(std::move(pr.program->tg));
  make_trainer(*st, o, pr.program->active);
  st->trainer->set_exported(pr.program->exported);
  st->trainer->set_recompute(pr.remat);
  // The run's optimizer may keep state the plan's did not count (SGD's momentum: the plan names
  // the optimizer, the run its hyperparameters): the stage's peak holds it too.
  int64_t state_bytes = 0;
  for (size_t t = 0; t < st->tg->graph.num_tensors(); ++t) {
    const Tensor& ten = st->tg->graph.tensor(static_cast<TensorId>(t));
    if (ten.role == TensorRole::kOptimizerState && st->trainer->holds(static_cast<TensorId>(t))) state_bytes += ten.bytes();
  }
  low.predicted_memory.peak_bytes += std::max<int64_t>(0, state_bytes - stage.memory.optimizer_state_bytes);
  low.predicted_memory.optimizer_state_bytes = std::max(low.predicted_memory.optimizer_state_bytes, state_bytes);
  // The block of each persistent tensor this rank holds (whole on a stage of one device); the
  // stage of the lowest rank holding a tensor writes it, each block by its lowest holder there
  // (RankState::writer_stage, filled once the ranks can talk).
  st->block = [&s = *st](TensorId t) {
    HeldBlock b = held_block(s.lowering, s.plan_tg->graph, s.tg->graph, t, s.lowering.coord[0], s.lowering.coord[1]);
    b.writer = b.writer && s.trainer->holds(t) && static_cast<size_t>(t) < s.writer_stage.size() &&
               s.writer_stage[t] == s.pipe->stage;
    return b;
  };
  finish_set_up(*st, o, rank, std::move(dims));
  return st;
}

std::unique_ptr<RankState> set_up(const PlannedRunOptions& o, int rank, int world) {
  auto st = std::make_unique<RankState>();
  const std::string& src = o.plan;
  st->plan = parse_plan(read_text(o.plan, "--plan"), src);
  if (st->plan.pipeline && st->plan.pipeline->stages.size() == 1) st->plan = as_single_stage(st->plan, src);
  const Plan& plan = st->plan;
  const int64_t devices = static_cast<int64_t>(plan.device_ids.size());
  if (!plan.pipeline && devices != world) {
    throw UserError(src, "device_ids", "the plan places its stage on " + std::to_string(devices) + " devices, but mpirun started " +
                    std::to_string(world) + " rank" + (world == 1 ? "" : "s") + "; run mpirun -np " + std::to_string(devices));
  }
  if (plan.precision != "fp32") {
    throw UserError(src, "precision", "\"" + plan.precision + "\": the CPU backend trains in fp32; search the plan with --precision fp32");
  }
  if (o.batch > 0 && o.batch != plan.global_batch) {
    throw UserError("--batch", std::to_string(o.batch), "differs from the plan's global batch " + std::to_string(plan.global_batch));
  }
  if (!o.optimizer.empty() && o.optimizer != plan.optimizer) {
    throw UserError("--optimizer", o.optimizer, "differs from the plan's optimizer \"" + plan.optimizer + "\" (its state and update are planned)");
  }
  ImportOptions io;
  io.batch = plan.global_batch;
  st->model = import_onnx_file(o.model, io);
  const Graph& forward = st->model.graph;
  // The cluster: these ranks are `world` local CPU devices; a plan made for another cluster runs
  // only when asked to, lowered as planned for its own cluster.
  const std::string profile_text = o.profile.empty() ? "" : read_text(o.profile, "--profile");
  const Cluster here = load_cluster("local:" + std::to_string(world));
  if (plan.cluster_fingerprint == cluster_fingerprint(here, profile_text)) {
    st->cluster = here;
  } else if (o.allow_cluster_mismatch) {
    st->cluster = load_cluster(plan_cluster_spec(plan));
  } else if (plan.cluster == "local:" + std::to_string(world)) {  // these ranks: the profile differs
    throw UserError(src, "cluster_fingerprint",
                    o.profile.empty() ? "the plan was searched with a profile (alpa-plan search --profile); pass the same "
                                        "--profile to alpa-run"
                                      : "the plan was not searched with --profile " + o.profile +
                                            " (another profile, or none); pass the profile the search used, if any");
  } else {
    throw UserError(src, "cluster", "the plan was made for \"" + plan.cluster + "\", not for these " + std::to_string(world) +
                    " local CPU ranks; pass --allow-cluster-mismatch to run it here (only the devices' speed differs)");
  }
  check_plan_bindings(plan, src, forward, st->cluster, profile_text);
  require_accumulable_loss(forward, plan.microbatches, src);

  OptimizerConfig opt;  // the plan's kind, the run's hyperparameters (momentum adds state)
  opt.lr = o.lr;
  opt.momentum = o.momentum;
  opt.weight_decay = o.weight_decay;
  st->plan_tg = std::make_unique<TrainingGraph>(plan_training_graph(plan, src, forward, &opt));
  opt = st->plan_tg->optimizer;
  if (plan.pipeline) return set_up_pipeline(o, std::move(st), rank, world, opt);
  st->sg = std::make_unique<StrategyGraph>(plan_strategy_graph(plan, src, *st->plan_tg, st->cluster));
  st->choice = plan_choice(plan, src, *st->plan_tg, *st->sg);
  st->lowering = lower_batch_parallel(plan, src, *st->sg, st->choice, rank);
  RankLowering& low = st->lowering;

  // A split batch divides a mean cross-entropy by the step's global label count; a loss that is
  // one ReduceMean (a mean squared error) is scaled back to the whole mean by the lowering,
  // without gradient accumulation (one device refuses that too).
  // (Each rank takes rows of the data where microbatches or ranks split it; with the batch in
  // blocks it loads each microbatch whole.)
  set_loss_counting(*st, o, plan.microbatches * low.batch_ways > 1 || low.batch_in_blocks, plan.microbatches * low.batch_ways > 1);
  TrainingGraph local = build_training_graph(rebatch(forward, plan.global_batch, low.microbatch_samples), opt);
  std::vector<int> dims = training_batch_dims(local, forward, plan.global_batch);
  st->tg = std::make_unique<TrainingGraph>(build_rank_program(st->lowering, *st->sg, st->choice, std::move(local)));
  extend_batch_dims(st->tg->graph, dims);
  // What this rank's allocator will hold: its program simulated (the plan file says the same
  // unless the run's optimizer keeps state the plan's does not).
  low.predicted_memory.peak_bytes = simulate_program_memory(*st->tg, plan.microbatches).peak_bytes;
  make_trainer(*st, o, {});
  // The part of each persistent tensor this rank holds: whole, or its shard of a sharded
  // parameter or optimizer state; the lowest rank holding a block writes it.
  st->block = [&low = st->lowering, &pg = st->plan_tg->graph, &g = st->tg->graph](TensorId t) {
    return held_block(low, pg, g, t, low.coord[0], low.coord[1]);
  };
  finish_set_up(*st, o, rank, std::move(dims));
  return st;
}

// Every parameter and buffer, gathered whole on rank 0 and written as DIR/<name>.npy (sharded
// ones through the control channel: not the plan's traffic).
void save_whole_parameters(const std::string& dir, RankState& st, int rank, int world) {
  const Graph& g = st.tg->graph;
  const Graph& pg = st.plan_tg->graph;
  if (st.pipe) {
    // Whole tensors are written by the lowest rank holding them; a tensor some stage shards is
    // gathered (every rank's block, through the control channel) and written by the lowest
    // rank holding a block.
    std::filesystem::create_directories(dir);
    const size_t nt = pg.num_tensors();
    std::vector<int64_t> sharded(nt, 0);
    for (size_t i = 0; i < nt; ++i) {
      const TensorId t = static_cast<TensorId>(i);
      sharded[i] = st.trainer->holds(t) && g.tensor(t).shape != pg.tensor(t).shape ? 1 : 0;
    }
    st.comms.control->all_reduce_max(sharded.data(), static_cast<int64_t>(nt), DType::kInt64);
    for (size_t i = 0; i < nt; ++i) {
      const TensorId t = static_cast<TensorId>(i);
      const Tensor& whole = pg.tensor(t);
      if (whole.role != TensorRole::kParameter && whole.role != TensorRole::kBuffer) continue;
      const std::string path = (std::filesystem::path(dir) / npy_file_name(whole.name)).string();
      if (!sharded[i]) {
        if (i < st.writes.size() && st.writes[i]) write_npy(path, whole.dtype, whole.shape, st.trainer->value(t));
        continue;
      }
      const bool held = st.trainer->holds(t);
      const size_t dims = whole.shape.size();
      // Per rank: its block's ranges and buffer shape (-1: none), then its buffer.
      std::vector<int64_t> layout(3 * dims, -1), layouts(3 * dims * static_cast<size_t>(world));
      int64_t count = held ? g.tensor(t).numel() : 0;
      if (held) {
        const HeldBlock b = held_block(st.lowering, pg, g, t, st.lowering.coord[0], st.lowering.coord[1]);
        for (size_t d = 0; d < dims; ++d) {
          layout[3 * d] = b.ranges[d].first;
          layout[3 * d + 1] = b.ranges[d].second;
          layout[3 * d + 2] = g.tensor(t).shape[d];
        }
      }
      st.comms.control->all_gather(layout.data(), layouts.data(), static_cast<int64_t>(layout.size()), DType::kInt64);
      st.comms.control->all_reduce_max(&count, 1, DType::kInt64);
      const int64_t elem = dtype_bytes(whole.dtype);
      std::vector<uint8_t> mine(static_cast<size_t>(count * elem), 0), all(static_cast<size_t>(count * elem * world));
      if (held) std::memcpy(mine.data(), st.trainer->value(t), static_cast<size_t>(g.tensor(t).bytes()));
      st.comms.control->all_gather(mine.data(), all.data(), count * elem / 4, DType::kInt32);
      int writer = -1;
      for (int r = 0; r < world && writer < 0; ++r) writer = layouts[static_cast<size_t>(r) * 3 * dims] >= 0 ? r : -1;
      if (rank != writer) continue;
      std::vector<uint8_t> out(static_cast<size_t>(whole.bytes()), 0);
      for (int r = 0; r < world; ++r) {
        const int64_t* l = layouts.data() + static_cast<size_t>(r) * 3 * dims;
        if (l[0] < 0) continue;
        HeldBlock b;
        for (size_t d = 0; d < dims; ++d) {
          b.ranges.emplace_back(l[3 * d], l[3 * d + 1]);
          b.buffer.push_back(l[3 * d + 2]);
        }
        b.global = whole.shape;
        copy_into_whole(all.data() + static_cast<size_t>(r) * static_cast<size_t>(count * elem), b, whole.shape, elem, out.data());
      }
      write_npy(path, whole.dtype, whole.shape, out.data());
    }
    any_rank(st.comms, false);  // every file is written when rank 0 returns
    return;
  }
  if (rank == 0) std::filesystem::create_directories(dir);
  for (size_t i = 0; i < pg.num_tensors(); ++i) {
    const TensorId t = static_cast<TensorId>(i);
    const Tensor& whole = pg.tensor(t);
    if (whole.role != TensorRole::kParameter && whole.role != TensorRole::kBuffer) continue;
    const Tensor& local = g.tensor(t);
    const std::string path = (std::filesystem::path(dir) / npy_file_name(whole.name)).string();
    if (local.shape == whole.shape) {
      if (rank == 0) write_npy(path, whole.dtype, whole.shape, st.trainer->value(t));
      continue;
    }
    std::vector<uint8_t> all(static_cast<size_t>(world * local.bytes()));
    st.comms.control->all_gather(st.trainer->value(t), all.data(), local.numel(), local.dtype);
    if (rank != 0) continue;
    std::vector<uint8_t> out(static_cast<size_t>(whole.bytes()));
    for (int r = 0; r < world; ++r) {
      const HeldBlock b = held_block(st.lowering, pg, g, t, r / st.lowering.view.d1, r % st.lowering.view.d1);
      copy_into_whole(all.data() + static_cast<size_t>(r) * static_cast<size_t>(local.bytes()), b, whole.shape,
                      dtype_bytes(whole.dtype), out.data());
    }
    write_npy(path, whole.dtype, whole.shape, out.data());
  }
}

// --trace: every rank's events gathered on rank 0 (through the control channel) and written as
// a Chrome trace: one track per rank, named by its stage.
void write_trace(const std::string& path, std::vector<TraceEvent> events, const std::string& track, RankComms& comms,
                 int rank, int world) {
  for (TraceEvent& e : events) e.track = rank;
  const std::string mine = trace_events_json({{rank, track}}, events);
  int64_t size = static_cast<int64_t>(mine.size()), longest = size;
  comms.control->all_reduce_max(&longest, 1, DType::kInt64);
  const int64_t words = (longest + 7) / 8;
  std::vector<int64_t> packed(static_cast<size_t>(words), 0), all(static_cast<size_t>(words * world));
  std::memcpy(packed.data(), mine.data(), mine.size());
  std::vector<int64_t> sizes(static_cast<size_t>(world));
  comms.control->all_gather(&size, sizes.data(), 1, DType::kInt64);
  comms.control->all_gather(packed.data(), all.data(), words, DType::kInt64);
  if (rank != 0) return;
  std::vector<std::string> parts;
  for (int r = 0; r < world; ++r) {
    parts.emplace_back(reinterpret_cast<const char*>(all.data() + static_cast<size_t>(r) * static_cast<size_t>(words)),
                       static_cast<size_t>(sizes[static_cast<size_t>(r)]));
  }
  std::ofstream out(path);
  if (!out) throw UserError(path, "--trace", "cannot be written");
  out << trace_document(parts);
  std::fprintf(stderr, "wrote %s (open it in https://ui.perfetto.dev or chrome://tracing)\n", path.c_str());
}

// The steps; exceptions propagate to the caller, which ends the job.
void train(const PlannedRunOptions& o, RankState& st, int rank, int world) {
  const Plan& plan = st.plan;
  const RankLowering& low = st.lowering;
  const Graph& forward = st.model.graph;
  if (!st.pipe || st.sg) st.trainer->set_batch_parallel(batch_parallel_hooks(low, *st.tg, st.comms));
  if (low.batch_in_blocks && low.coord[0] == 0 && low.coord[1] == 0) {
    const std::string who = st.pipe ? "stage " + std::to_string(st.pipe->stage) + " of the plan" : "the plan";
    std::fprintf(stderr, "alpa-run: %s splits the batch in some nodes only: each of its ranks runs the whole "
                 "microbatch's graph, taking blocks of the batch where a node splits it\n", who.c_str());
  }
  std::ofstream metrics;
  if (rank == 0 && !o.metrics.empty()) {
    metrics.open(o.metrics);
    if (!metrics) throw UserError(o.metrics, "--metrics", "cannot be written");
  }
  const InjectedFailure injected = injected_failure();  // the failure tests' hook
  const bool tty = rank == 0 && isatty(STDERR_FILENO) != 0;
  const int64_t K = plan.microbatches, ls = low.microbatch_samples, B = plan.global_batch;
  const bool split = K * low.batch_ways > 1 || low.batch_in_blocks;
  // Bytes sent per kind: the planned collectives, and a pipeline's point-to-point sends.
  auto traffic = [&st] {
    std::map<std::string, int64_t> t = planned_traffic(st.comms);
    if (st.pipe) t["send"] = st.comms.pipe->bytes_sent(CollectiveKind::kSendRecv);  // relays inside a stage included
    return t;
  };
  std::map<std::string, int64_t> before = traffic(), per_step;
  std::vector<int64_t> relays(static_cast<size_t>(world), 0), plan_relays(static_cast<size_t>(world), 0);
  int64_t relay_before = st.pipe ? st.pipe->relay_bytes_sent : 0;
  if (st.pipe) st.comms.control->all_gather(&st.pipe->predicted_relay_bytes, plan_relays.data(), 1, DType::kInt64);
  std::vector<int64_t> sends(static_cast<size_t>(world), 0), plan_sends(static_cast<size_t>(world), 0),
      plan_peaks(static_cast<size_t>(world), 0);
  int64_t my_plan_peak = low.predicted_memory.peak_bytes;
  st.comms.control->all_gather(&my_plan_peak, plan_peaks.data(), 1, DType::kInt64);
  if (st.pipe) st.comms.control->all_gather(&st.pipe->predicted_send_bytes, plan_sends.data(), 1, DType::kInt64);
  std::vector<int64_t> peaks(static_cast<size_t>(world), 0);
  std::vector<TraceEvent> step_events;  // --trace of a single-stage plan: one event per step
  std::vector<double> step_seconds;     // rank 0's, each step
  if (!o.trace.empty()) {
    any_rank(st.comms, false);  // a common origin
    const auto origin = std::chrono::steady_clock::now();
    if (st.pipe) {
      st.pipe->tracing = true;
      st.pipe->origin = origin;
    }
  }
  const auto trace_origin = std::chrono::steady_clock::now();
  for (int64_t step = st.first_step; step < o.steps; ++step) {
    if (injected.at(rank, step + 1)) {
      throw UserError("ALPA_TEST_FAIL_RANK", std::to_string(rank), "injected failure at step " + std::to_string(step + 1));
    }
    const auto batch = st.data->batch(step);
    std::vector<std::vector<const void*>> micro(static_cast<size_t>(K));
    for (int64_t m = 0; m < K; ++m) {
      const int64_t first = (m * low.batch_ways + low.batch_block) * ls;
      for (const auto& b : batch) {
        const size_t per_sample = b.size() / static_cast<size_t>(B);
        micro[static_cast<size_t>(m)].push_back(b.data() + static_cast<size_t>(first) * per_sample);
      }
    }
    const double normalizer = split && st.count_labels ? count_labels(st.loss_target, forward, batch) : 0.0;
    const auto start = std::chrono::steady_clock::now();
    StepResult r;
    double loss = 0;
    if (st.pipe) {
      r = run_pipeline_step(*st.pipe, *st.trainer, *st.comms.pipe, micro, step, normalizer);
      // The last stage's (whole on each of its ranks): its first rank's, summed with zeros.
      loss = st.pipe->index == 0 ? r.loss : 0.0;
      st.comms.control->all_reduce_sum(&loss, 1, DType::kFloat64);
    } else {
      r = st.trainer->step_microbatches(micro, step, normalizer);
      loss = r.loss;  // the lowering all-reduces the loss: every rank has the whole
      if (!o.trace.empty()) {
        const auto end = std::chrono::steady_clock::now();
        step_events.push_back({"step " + std::to_string(step + 1), "compute", 0,
                               std::chrono::duration<double, std::micro>(start - trace_origin).count(),
                               std::chrono::duration<double, std::micro>(end - start).count()});
      }
    }
    int64_t peak = r.peak_bytes;
    st.comms.control->all_gather(&peak, peaks.data(), 1, DType::kInt64);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const auto after = traffic();
    for (const auto& [kind, b] : after) per_step[kind] = b - before[kind];
    before = after;
    std::map<std::string, std::vector<int64_t>> kinds_per_rank;  // every rank's, as tests check each
    for (const char* kind : {"all_reduce", "all_gather", "reduce_scatter", "all_to_all"}) {
      std::vector<int64_t>& v = kinds_per_rank[kind];
      v.assign(static_cast<size_t>(world), 0);
      st.comms.control->all_gather(&per_step[kind], v.data(), 1, DType::kInt64);
    }
    if (st.pipe) {
      st.comms.control->all_gather(&per_step["send"], sends.data(), 1, DType::kInt64);
      int64_t relayed = st.pipe->relay_bytes_sent - relay_before;
      relay_before = st.pipe->relay_bytes_sent;
      st.comms.control->all_gather(&relayed, relays.data(), 1, DType::kInt64);
    }
    if (rank != 0) continue;
    const int64_t max_peak = *std::max_element(peaks.begin(), peaks.end());
    const double samples_per_s = static_cast<double>(B) / (ms / 1000.0);
    step_seconds.push_back(ms / 1000.0);
    if (metrics) {
      nlohmann::ordered_json m = {{"step", step + 1}, {"loss", loss}, {"step_ms", ms}, {"samples_per_s", samples_per_s},
                                  {"peak_bytes", max_peak}, {"peak_bytes_per_rank", peaks}, {"comm_bytes", per_step},
                                  {"plan_comm_bytes", low.predicted_bytes}, {"plan_peak_bytes", low.predicted_memory.peak_bytes},
                                  {"plan_peak_bytes_per_rank", plan_peaks}, {"plan_step_s", plan.estimate.iteration_time_s}};
      if (st.pipe) {
        m["send_bytes_per_rank"] = sends;
        m["plan_send_bytes_per_rank"] = plan_sends;
        m["relay_bytes_per_rank"] = relays;
        m["plan_relay_bytes_per_rank"] = plan_relays;
      }
      m["comm_bytes_per_rank"] = kinds_per_rank;
      metrics << m.dump() << "\n" << std::flush;
    }
    const int width = 30;
    const int filled = static_cast<int>(width * (step + 1) / o.steps);  // of the steps to reach
    std::fprintf(stderr, "%sstep %lld/%lld [%s%s] loss %.6f  %.1f ms  %.1f samples/s  peak %s  sent %s%s", tty ? "\r" : "",
                 static_cast<long long>(step + 1), static_cast<long long>(o.steps), std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), loss, ms, samples_per_s,
                 format_bytes(static_cast<double>(max_peak)).c_str(),
                 format_bytes(static_cast<double>(per_step["all_reduce"] + per_step["all_gather"] + per_step["reduce_scatter"] +
                                                  per_step["all_to_all"] + per_step["send"])).c_str(),
                 tty ? "" : "\n");
  }
  if (tty) std::fprintf(stderr, "\n");
  if (rank == 0) {
    std::fprintf(stderr, "per step and device: sent");
    for (const auto& [kind, b] : per_step) {
      const auto it = low.predicted_bytes.find(kind);
      const double planned = it == low.predicted_bytes.end() ? 0.0 : it->second;
      if (b > 0 || planned > 0) std::fprintf(stderr, "  %s %lld B (plan %.0f B)", kind.c_str(), static_cast<long long>(b), planned);
    }
    if (st.pipe && relays[0] > 0) std::fprintf(stderr, " (send: %lld B relayed inside the stage)", static_cast<long long>(relays[0]));
    if (st.pipe) std::fprintf(stderr, " (rank 0; every rank's in the metrics)");
    std::fprintf(stderr, "\n");
    const int64_t max_peak = peaks.empty() ? 0 : *std::max_element(peaks.begin(), peaks.end());
    std::fprintf(stderr, "peak memory per device: %s measured (the allocator's high-water mark), %s planned\n",
                 format_bytes(static_cast<double>(max_peak)).c_str(),
                 format_bytes(static_cast<double>(low.predicted_memory.peak_bytes)).c_str());
    print_step_time(step_seconds, plan.estimate.iteration_time_s);
  }
  if (!o.trace.empty()) {
    const std::string track = st.pipe ? "rank " + std::to_string(rank) + " (stage " + std::to_string(st.pipe->stage) + ")"
                                      : "rank " + std::to_string(rank);
    write_trace(o.trace, st.pipe ? st.pipe->events : step_events, track, st.comms, rank, world);
  }
  if (!o.save_params.empty()) save_whole_parameters(o.save_params, st, rank, world);
  if (!o.save.empty()) {
    const std::function<void()> barrier = [&st] { any_rank(st.comms, false); };
    save_checkpoint(o.save, *st.trainer, {o.steps, st.seed, plan.optimizer, plan.global_batch}, rank, st.block, barrier);
  }
}

}  // namespace

int run_planned(const PlannedRunOptions& o, int* argc, char*** argv) {
  init_mpi(argc, argv);
  std::unique_ptr<MpiCommunicator> startup = make_mpi_world_communicator();
  const int rank = startup->rank(), world = startup->size();
  std::unique_ptr<RankState> st;
  std::string error;
  int code = 0;
  try {
    st = set_up(o, rank, world);
  } catch (const UserError& e) {
    error = std::string("error: ") + e.what();
    code = 2;
  } catch (const InternalError& e) {
    error = e.what();
    code = 3;
  } catch (const std::bad_alloc&) {
    error = "error: out of memory";
    code = 3;
  }
  // Every rank learns which ranks failed to set up, so none waits in a collective for them.
  int64_t mine = code, worst = 0;
  std::vector<int64_t> codes(static_cast<size_t>(world), 0);
  startup->all_gather(&mine, codes.data(), 1, DType::kInt64);
  std::string failed;
  for (int r = 0; r < world; ++r) {
    if (codes[static_cast<size_t>(r)] == 0) continue;
    worst = std::max(worst, codes[static_cast<size_t>(r)]);
    failed += (failed.empty() ? "" : ", ") + std::to_string(r);
  }
  if (worst != 0) {
    if (code != 0) std::fprintf(stderr, "alpa-run: rank %d: %s\n", rank, error.c_str());
    else std::fprintf(stderr, "alpa-run: rank %d: stopping: rank %s failed to start\n", rank, failed.c_str());
    st.reset();
    startup.reset();
    finalize_mpi();
    return static_cast<int>(worst);
  }
  try {
    if (st->pipe) {
      st->comms = make_pipeline_comms(st->pipe->stage, st->pipe->index, st->lowering.view);
      // Every rank's block of every boundary tensor: who sends what to whom.
      const std::vector<int64_t> mine = box_table(*st->pipe);
      const int64_t width = static_cast<int64_t>(mine.size());
      int64_t counts[2] = {width, -width};  // every rank must have split the plan into the same boundaries
      st->comms.control->all_reduce_max(counts, 2, DType::kInt64);
      ALPA_CHECK(counts[0] == -counts[1], "pipeline: the ranks' programs disagree on the boundary tensors");
      std::vector<int64_t> every(static_cast<size_t>(width * world));
      st->comms.control->all_gather(mine.data(), every.data(), width, DType::kInt64);
      finish_pipeline_layout(*st->pipe, st->plan, std::move(every), world);
      st->lowering.predicted_bytes["send"] = static_cast<double>(st->pipe->predicted_send_bytes);

      // Which rank writes each tensor several stages hold: the lowest holding it.
      // (The plan's tensors: a rank program's own additions hold nothing persistent.)
      const int64_t n = static_cast<int64_t>(st->plan_tg->graph.num_tensors());
      std::vector<int64_t> held(static_cast<size_t>(n)), all(static_cast<size_t>(n * world));
      for (int64_t t = 0; t < n; ++t) held[static_cast<size_t>(t)] = st->trainer->holds(static_cast<TensorId>(t)) ? 1 : 0;
      st->comms.control->all_gather(held.data(), all.data(), n, DType::kInt64);
      st->writes.assign(static_cast<size_t>(n), false);
      for (int64_t t = 0; t < n; ++t) {
        bool lower = false;
        for (int r = 0; r < rank; ++r) lower = lower || all[static_cast<size_t>(r * n + t)] != 0;
        st->writes[static_cast<size_t>(t)] = held[static_cast<size_t>(t)] != 0 && !lower;
      }
      st->writer_stage.assign(static_cast<size_t>(n), -1);
      for (int64_t t = 0; t < n; ++t) {
        for (int r = 0; r < world && st->writer_stage[static_cast<size_t>(t)] < 0; ++r) {
          if (all[static_cast<size_t>(r * n + t)] == 0) continue;
          for (size_t s = 0; s < st->pipe->stage_ranks.size(); ++s) {
            const auto& rs = st->pipe->stage_ranks[s];
            if (std::find(rs.begin(), rs.end(), r) != rs.end()) st->writer_stage[static_cast<size_t>(t)] = static_cast<int>(s);
          }
        }
      }
    } else {
      st->comms = make_rank_comms(st->lowering.view);
    }
    train(o, *st, rank, world);
  } catch (const UserError& e) {
    std::fprintf(stderr, "alpa-run: rank %d: error: %s (stopping every rank)\n", rank, e.what());
    std::fflush(stderr);
    abort_mpi(2);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alpa-run: rank %d: %s (stopping every rank)\n", rank, e.what());
    std::fflush(stderr);
    abort_mpi(3);
  }
  st.reset();
  startup.reset();
  finalize_mpi();
  return 0;
}

}  // namespace alpa::exec
