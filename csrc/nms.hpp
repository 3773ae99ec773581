#pragma once
// (filled in by the nms kernel work)
namespace samrt {}
