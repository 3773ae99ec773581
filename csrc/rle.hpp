#pragma once
// (filled in by the rle kernel work)
namespace samrt {}
