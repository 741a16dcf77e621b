// TensorRT plugin "LamscAscPack" (IPluginV3, TensorRT 10): the ASC pack kernel inside an engine, so the
// transmitter's engine ends in payload-ready bit streams instead of a float feature map.
//
// Inputs:  values (1, C, h, w) float32, depth (1, 1, h, w) float32 (the mask network's output)
// Outputs: value_words int32 [ceil(C h w bits / 32)]  the quantised kept values, MSB-first, zero-padded
//          level_words int32 [ceil(h w level_bits / 32)] the bit-packed depth map
//          meta        int32 [2]: kept value count, float32 bits of the quantiser scale
// Attributes: num_levels (int32), bits (int32). The host assembles header + parts + CRC
// (lamsc.semcom.payload.assemble), as for the ctypes path.
//
// Build: CMake builds this only where it finds TensorRT (NvInfer.h, libnvinfer). Load it with
// `trtexec --dynamicPlugins=liblamsc_trt_plugin.so` or IPluginRegistry::loadLibrary: getCreators() below.

#include <cstring>
#include <string>
#include <vector>

#include <NvInfer.h>
#include <NvInferRuntime.h>

#include "lamsc_kernels.h"

using namespace nvinfer1;

namespace {

constexpr char const* kName = "LamscAscPack";
constexpr char const* kVersion = "1";

int32_t levelBits(int32_t numLevels) {
  int32_t b = 1;
  while ((1 << b) < numLevels) ++b;
  return b;
}

class AscPackPlugin final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild,
                            public IPluginV3OneRuntime {
 public:
  AscPackPlugin(int32_t numLevels, int32_t bits) : mNumLevels(numLevels), mBits(bits) { initFields(); }
  AscPackPlugin(AscPackPlugin const& other) : mNumLevels(other.mNumLevels), mBits(other.mBits) { initFields(); }

  // IPluginV3
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
      case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    }
    return nullptr;
  }
  IPluginV3* clone() noexcept override { return new AscPackPlugin(*this); }

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override { return kName; }
  char const* getPluginVersion() const noexcept override { return kVersion; }
  char const* getPluginNamespace() const noexcept override { return ""; }

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 3; }
  int32_t configurePlugin(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
                          int32_t) noexcept override {
    return 0;
  }
  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override {
    if (inOut[pos].desc.format != TensorFormat::kLINEAR) return false;
    return inOut[pos].desc.type == (pos < nbInputs ? DataType::kFLOAT : DataType::kINT32);
  }
  int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const*, int32_t) const noexcept override {
    for (int32_t i = 0; i < nbOutputs; ++i) outputTypes[i] = DataType::kINT32;
    return 0;
  }
  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs,
                          int32_t nbOutputs, IExprBuilder& eb) noexcept override {
    if (nbInputs != 2 || nbOutputs != 3 || inputs[0].nbDims != 4 || inputs[0].d[0]->isConstant() &&
        inputs[0].d[0]->getConstantValue() != 1) {
      return -1;  // one image at a time: the payload is per image
    }
    auto const* hw = eb.operation(DimensionOperation::kPROD, *inputs[0].d[2], *inputs[0].d[3]);
    auto const* chw = eb.operation(DimensionOperation::kPROD, *inputs[0].d[1], *hw);
    auto const* valueBits = eb.operation(DimensionOperation::kPROD, *chw, *eb.constant(mBits));
    auto const* levelBitsTotal = eb.operation(DimensionOperation::kPROD, *hw, *eb.constant(levelBits(mNumLevels)));
    outputs[0].nbDims = 1;
    outputs[0].d[0] = eb.operation(DimensionOperation::kCEIL_DIV, *valueBits, *eb.constant(32));
    outputs[1].nbDims = 1;
    outputs[1].d[0] = eb.operation(DimensionOperation::kCEIL_DIV, *levelBitsTotal, *eb.constant(32));
    outputs[2].nbDims = 1;
    outputs[2].d[0] = eb.constant(2);
    return 0;
  }
  size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t, DynamicPluginTensorDesc const*,
                          int32_t) const noexcept override {
    int64_t const hw = inputs[0].max.d[2] * inputs[0].max.d[3];
    return static_cast<size_t>(3 * hw) * sizeof(int32_t);  // levels, counts, offsets
  }

  // IPluginV3OneRuntime
  int32_t onShapeChange(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) noexcept override {
    return 0;
  }
  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
    int32_t const c = static_cast<int32_t>(inputDesc[0].dims.d[1]);
    int32_t const hw = static_cast<int32_t>(inputDesc[0].dims.d[2] * inputDesc[0].dims.d[3]);
    auto* ws = static_cast<int32_t*>(workspace);
    auto* meta = static_cast<int32_t*>(outputs[2]);
    // The writers OR bits into the outputs, and the scale is a max: start every output at zero.
    for (int32_t i = 0; i < 3; ++i) {
      cudaMemsetAsync(outputs[i], 0, static_cast<size_t>(outputDesc[i].dims.d[0]) * sizeof(int32_t), stream);
    }
    return lamsc_asc_pack(static_cast<float const*>(inputs[0]), static_cast<float const*>(inputs[1]), c, hw,
                          mNumLevels, mBits, levelBits(mNumLevels), ws, ws + hw, ws + 2 * hw,
                          reinterpret_cast<unsigned int*>(meta + 1), static_cast<uint32_t*>(outputs[1]),
                          static_cast<uint32_t*>(outputs[0]), meta, stream);
  }
  IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }
  PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFields; }

 private:
  void initFields() {
    mFieldList = {PluginField("num_levels", &mNumLevels, PluginFieldType::kINT32, 1),
                  PluginField("bits", &mBits, PluginFieldType::kINT32, 1)};
    mFields.nbFields = static_cast<int32_t>(mFieldList.size());
    mFields.fields = mFieldList.data();
  }

  int32_t mNumLevels;
  int32_t mBits;
  std::vector<PluginField> mFieldList;
  PluginFieldCollection mFields{};
};

class AscPackPluginCreator final : public IPluginCreatorV3One {
 public:
  AscPackPluginCreator() {
    mAttributes = {PluginField("num_levels", nullptr, PluginFieldType::kINT32, 1),
                   PluginField("bits", nullptr, PluginFieldType::kINT32, 1)};
    mFields.nbFields = static_cast<int32_t>(mAttributes.size());
    mFields.fields = mAttributes.data();
  }
  char const* getPluginName() const noexcept override { return kName; }
  char const* getPluginVersion() const noexcept override { return kVersion; }
  char const* getPluginNamespace() const noexcept override { return ""; }
  PluginFieldCollection const* getFieldNames() noexcept override { return &mFields; }
  IPluginV3* createPlugin(char const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
    int32_t numLevels = 8, bits = 8;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
      auto const& f = fc->fields[i];
      if (f.data == nullptr || f.type != PluginFieldType::kINT32) continue;
      if (std::strcmp(f.name, "num_levels") == 0) numLevels = *static_cast<int32_t const*>(f.data);
      if (std::strcmp(f.name, "bits") == 0) bits = *static_cast<int32_t const*>(f.data);
    }
    if (numLevels < 1 || bits < 2 || bits > 16) return nullptr;  // same bounds as the payload format
    return new AscPackPlugin(numLevels, bits);
  }

 private:
  std::vector<PluginField> mAttributes;
  PluginFieldCollection mFields{};
};

}  // namespace

extern "C" __attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static AscPackPluginCreator creator;
  static IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}
