#pragma once
// (filled in by the postprocess kernel work)
namespace samrt {}
