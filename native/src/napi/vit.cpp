#include "vit.h"

namespace speed_napi {

template class ClassifierModel<ViTTraits>;

}  // namespace speed_napi
