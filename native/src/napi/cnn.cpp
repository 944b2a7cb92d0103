#include "cnn.h"

namespace speed_napi {

template class ClassifierModel<CNNTraits>;

}  // namespace speed_napi
