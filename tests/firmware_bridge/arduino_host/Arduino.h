// A host (Linux) stand-in for the Arduino core, just enough to run the halofarm meter sketch
// on a pty: Serial is stdin/stdout (a pty master in the test), micros() is CLOCK_MONOTONIC,
// the marker pin's interrupt fires on SIGUSR1. Test-only; not a mock of our code.
#pragma once
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define INPUT_PULLUP 2
#define FALLING 2

static inline uint32_t micros() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)((uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL);
}

class HostSerial {
 public:
  void begin(unsigned long) {}
  int available() {
    struct pollfd p = {0, POLLIN, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN) ? 1 : 0;
  }
  int read() {
    unsigned char c;
    return ::read(0, &c, 1) == 1 ? c : -1;
  }
  void print(const char *s) { put(s, strlen(s)); }
  void print(char c) { put(&c, 1); }

 private:
  void put(const char *s, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(1, s, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) exit(0);  // the host went away
      s += w;
      n -= (size_t)w;
    }
  }
};
extern HostSerial Serial;

typedef void (*isr_t)(void);
extern isr_t g_isr;
static inline void on_signal(int) {
  if (g_isr) g_isr();
}
static inline int digitalPinToInterrupt(int pin) { return pin; }
static inline void attachInterrupt(int, isr_t fn, int) {
  g_isr = fn;
  signal(SIGUSR1, on_signal);
}
static inline void pinMode(int, int) {}
static inline void noInterrupts() {}
static inline void interrupts() {}
