/* ch32fun settings for the die demo (see ch32fun/ch32fun.h for every option). */
#ifndef _FUNCONFIG_H
#define _FUNCONFIG_H

#define FUNCONF_USE_DEBUGPRINTF 1  /* printf over the SWIO debug pin: `make monitor` */
#define FUNCONF_USE_UARTPRINTF 0
#define FUNCONF_SYSTICK_USE_HCLK 1 /* SysTick->CNT counts core cycles (48 MHz) */

#endif
