// greenshim runtime: the API for a program that links it (greenlets, and
// gevent-style spawn/join/sleep/wait on fds). The hub and the diagnostics
// (runtime/embed/) are the shim's interface and are not installed.
#pragma once
#include "greenshim/clock.hpp"
#include "greenshim/gevent.hpp"
#include "greenshim/greenlet.hpp"
