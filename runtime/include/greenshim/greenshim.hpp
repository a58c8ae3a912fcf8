// greenshim runtime: everything (greenlets, the hub, the gevent-style API).
#pragma once
#include "greenshim/gevent.hpp"
#include "greenshim/greenlet.hpp"
#include "greenshim/diag.hpp"
#include "greenshim/hub.hpp"
